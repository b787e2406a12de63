#!/bin/sh
# Ignores SIGTERM, leaves a double-forked grandchild behind, and never finishes by itself.
# $1 is a marker the test looks for among the host's processes (it becomes their $0).
cat >/dev/null
trap '' TERM
touch "$HOME/h" "$TMPDIR/t" ./w
( trap '' TERM; sh -c 'sleep 1000' "$1" & ) &
echo started >&2
exec sh -c "trap '' TERM; sleep 1001" "$1"
