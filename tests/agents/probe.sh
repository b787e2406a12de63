#!/bin/sh
# Tries, from inside its sandbox, everything an agent must not reach, one line per attempt.
# The request's data says where to look: {"mode": "hold"|"probe", "mark", "state_dir",
# "peer_pid", "ports": [...], "secret_name"}. "hold" leaves the mark in its private dirs and waits
# (at most 15 s) for SIGUSR1, which the test sends from the host.
event=$(cat)
get() { printf '%s' "$event" | jq -r ".data.$1"; }
mark=$(get mark)
if [ "$(get mode)" = hold ]; then
  echo "$mark" >"$HOME/mark"; echo "$mark" >"$TMPDIR/mark"; echo "$mark" >./mark
  i=0 released=
  trap 'released=1' USR1
  while [ -z "$released" ] && [ $i -lt 300 ]; do sleep 0.05; i=$((i + 1)); done
  echo "held: $i"
  exit 0
fi
one() { printf '%s' "$*" | tr '\n' ' ' | head -c 300; echo; }
name=$(get secret_name)
state=$(get state_dir)
echo "pids: $(ls /proc | grep -c '^[0-9]')"
echo "env-secret: $(env | grep -c "$name")"
echo "proc-environ-secret: $(cat /proc/[0-9]*/environ 2>/dev/null | tr '\0' '\n' | grep -c "$name")"
one "dev-environ: $(cat "/proc/$(get dev_pid)/environ" 2>&1)"
one "state-ls: $(ls "$state" 2>&1)"
one "ca-key: $(cat "$state/egress/ca/mitmproxy-ca.pem" 2>&1)"
one "budgets: $(head -c 100 "$state/egress/budgets.sqlite3" 2>&1)"
one "dev-log: $(head -c 100 "$state/logs/dev.log" 2>&1)"
one "callback-key: $(cat "$state/callback.key" 2>&1)"
one "callback-secrets: $(ls "$state/callback-secrets" 2>&1)"
one "invocations: $(head -c 100 "$state/invocations.sqlite3" 2>&1)"
one "peer-root: $(cat "/proc/$(get peer_pid)/root/tmp/mark" 2>&1)"
echo "peer-mark-found: $(grep -rl "$mark" /tmp /run /var/tmp /dev/shm "$HOME" "$TMPDIR" . 2>/dev/null | head -3 | tr '\n' ' ')"
for port in $(get 'ports[]'); do
  one "tcp-127.0.0.1:$port: $(socat -T 2 /dev/null "TCP:127.0.0.1:$port" 2>&1 && echo connected)"
done
one "tcp-other-host: $(socat -T 2 /dev/null TCP:192.0.2.1:80 2>&1 && echo connected)"
one "resolve: $(getent ahosts api.anthropic.com 2>&1; echo "exit $?")"
one "proxy-no-credentials: $(curl -s -o /dev/null -w '%{http_connect}' --proxy http://127.0.0.1:3128 https://api.anthropic.com/; echo " exit $?")"
one "proxy-not-allowed: $(curl -s -o /dev/null -w '%{http_connect}' https://example.com/; echo " exit $?")"
