#!/bin/sh
# Calls the model once through the egress gateway and prints what the proxy and the upstream
# answered, the invocation id its environment names, its envelope's event id and its proxy URL.
# With data {"hold": true} it first waits (at most 15 s) for SIGUSR1, which the test sends from
# the host once its trap is set.
released=
trap 'released=1' USR1
event=$(cat)
if [ "$(printf '%s' "$event" | jq -r .data.hold)" = true ]; then
  i=0
  while [ -z "$released" ] && [ $i -lt 300 ]; do sleep 0.05; i=$((i + 1)); done
fi
echo "model: $(curl -s -o /dev/null -w '%{http_connect} %{http_code}' https://api.anthropic.com/v1/messages \
  -H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' \
  -d '{"model": "claude-test", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}')"
echo "invocation: $CLRK_METADATA_INVOCATION_ID"
echo "envelope-invocation: $(printf '%s' "$event" | jq -r .clrkinvocationid)"
echo "event: $(printf '%s' "$event" | jq -r .id)"
echo "proxy: $HTTPS_PROXY"
