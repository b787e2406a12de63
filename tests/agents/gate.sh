#!/bin/sh
# Waits at the gate (a line through the egress proxy, answered when the test opens it), prints
# $TRACEPARENT, and answers.
cat >/dev/null
proxy=${HTTPS_PROXY#http://}; proxy=${proxy##*@}
echo "gate: $(echo "$CLRK_METADATA_INVOCATION_ID" | socat -t 30 - "TCP:$proxy")"
echo "traceparent: $TRACEPARENT"
