#!/bin/sh
# Tries, from inside a plain sandbox, what its confinement must refuse, one line per attempt:
# "NAME: ok" (or what it got) when it worked, else the error it met. The request's data says where:
# {"mode": "probe"|"hold", "mark": a file name, "places": [folders to write into], "ports": [TCP
# ports on 127.0.0.1], "abstract": an abstract unix socket's name, "setuid": a setuid-root program,
# "big": bytes to write into one file, "signal": "gateway" to ask the gateway for a process to
# signal, "https": a URL to fetch through the gateway}. With "signal", the gateway
# ($HTTPS_PROXY's host:port) is the test's: it answers "uid N" with the pid of a process of uid N
# outside the sandbox, and holds "hold HOME".
# "hold" (a careless victim) opens its own directory and HOME to everyone, then waits for the gateway.
event=$(cat)
get() { printf '%s' "$event" | jq -r ".data.$1"; }
gateway=${HTTPS_PROXY#http://}
gateway=${gateway##*@}
if [ "$(get mode)" = hold ]; then
  chmod 777 "${HOME%/home}" "$HOME"
  echo "hold $HOME" | socat -t 30 - "TCP:$gateway"
  exit 0
fi
one() { printf '%s' "$*" | tr '\n' ' ' | head -c 300; echo; }
mark=$(get mark)
for place in $(get 'places[]'); do
  one "write $place: $( (echo x >"$place/$mark") 2>&1 && echo ok)"
  one "symlink $place: $(ln -s /etc/passwd "$place/$mark-link" 2>&1 && echo ok)"
done
for own in "$HOME" "$TMPDIR" .; do
  one "write own $own: $( (echo x >"$own/$mark" && mkdir "$own/$mark-dir" && mv "$own/$mark" "$own/$mark-dir/") 2>&1 && echo ok)"
done
one "write /dev/null: $( (echo x >/dev/null) 2>&1 && echo ok)"
for port in $(get 'ports[]'); do
  one "tcp $port: $(socat -T 2 /dev/null "TCP:127.0.0.1:$port" 2>&1 && echo connected)"
done
one "bind: $(python3 -c 'import socket; socket.socket().bind(("127.0.0.1", 0)); print("bound")' 2>&1 | tail -1)"
one "abstract: $(socat -T 2 /dev/null "ABSTRACT-CONNECT:$(get abstract)" 2>&1 && echo connected)"
if [ "$(get signal)" = gateway ]; then
  pid=$(echo "uid $(id -u)" | socat -t 10 - "TCP:$gateway")
  one "signal: $(kill -TERM "$pid" 2>&1 && echo sent)"
fi
if [ "$(get https)" != null ]; then
  one "https: $(curl -s -o /dev/null -w '%{http_connect} %{http_code}' "$(get https)"; echo " exit $?")"
fi
one "setuid: $("$(get setuid)" 2>&1)"
one "open-files: $(ulimit -n)"
head -c "$(get big)" /dev/zero >"$HOME/big" 2>/dev/null
one "big: exit $? size $(wc -c <"$HOME/big")"
