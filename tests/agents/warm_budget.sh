#!/bin/sh
# Warm start's model calls with curl, each on a connection of its own: one while it starts (before
# it writes to $CLRK_READY_FD, when set; what the proxy and the upstream answered goes to stderr
# as "start-up call: CONNECT STATUS"), one for its request ("call: CONNECT STATUS" on stdout).
# $1 is the Messages API body.
call() {
  curl -s -o /dev/null -w '%{http_connect} %{http_code}' https://api.anthropic.com/v1/messages \
    -H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' -d "$1"
}
echo "start-up call: $(call "$1")" >&2
[ -z "${CLRK_READY_FD:-}" ] || echo ready >&"$CLRK_READY_FD"
cat >/dev/null
echo "call: $(call "$1")"
