#!/bin/sh
# Leaves its invocation id in its private dirs, waits at the barrier (a line through the egress
# proxy, answered once every sandbox has arrived), then looks for the other's files.
cat >/dev/null
id=$CLRK_METADATA_INVOCATION_ID
echo "$id" > "$HOME/mark"; echo "$id" > "$TMPDIR/mark"; echo "$id" > ./mark
proxy=${HTTPS_PROXY#http://}; proxy=${proxy##*@}
others=$(echo "$id" | socat -t 10 - "TCP:$proxy")
for other in $others; do
  [ "$other" = "$id" ] && continue
  found=$(grep -rls "$other" /tmp /run "$HOME" "$TMPDIR" . 2>/dev/null | head -1)
  echo "other=$other found=${found:-none}"
done
echo "home=$HOME"
echo "uid=$(id -u)"
