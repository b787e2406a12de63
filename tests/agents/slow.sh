#!/bin/sh
# Says "started" on stderr, then answers after $1 seconds.
cat >/dev/null
echo started >&2
sleep "$1"
echo finished
