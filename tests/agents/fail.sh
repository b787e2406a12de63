#!/bin/sh
# Fails with exit code 3, saying why on stderr.
cat >/dev/null
echo "something went wrong" >&2
echo "partial output that the caller must not see"
exit 3
