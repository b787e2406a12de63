#!/bin/sh
# Prints "first", waits until the file $1 exists (the test makes it once it has seen "first"),
# then prints "second" and, without a final newline, "last". With $2, it leaves a background
# child behind first (a tree to kill), and exits with $2 at the end.
cat >/dev/null
if [ -n "$2" ]; then
  ( trap '' TERM; sleep 1000 ) &
fi
echo first
while [ ! -e "$1" ]; do
  sleep 0.05
done
echo second
printf last
exit "${2:-0}"
