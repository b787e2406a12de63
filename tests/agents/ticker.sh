#!/bin/sh
# Prints "tick N" every $2 seconds (default 1), $1 times, then "done".
cat >/dev/null
n=0
while [ "$n" -lt "$1" ]; do
  n=$((n + 1))
  echo "tick $n"
  sleep "${2:-1}"
done
echo done
