#!/bin/sh
# Sends its proxy URL through $HTTPS_PROXY's host:port, then tries host port $DIRECT_PORT directly.
cat >/dev/null
proxy=${HTTPS_PROXY#http://}; proxy=${proxy##*@}
echo "proxy: $(echo "$HTTPS_PROXY" | socat -t 5 - "TCP:$proxy" 2>&1)"
if echo direct | socat -T 2 - "TCP:127.0.0.1:$DIRECT_PORT" >/dev/null 2>&1; then
  echo "direct: reached"
else
  echo "direct: failed"
fi
