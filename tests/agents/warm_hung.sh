#!/bin/sh
# Never ready when started ahead: with $CLRK_READY_FD set (warm start) it says so on stderr and
# sleeps instead of writing its line. Started on request, it echoes its envelope.
if [ -n "${CLRK_READY_FD:-}" ]; then
  echo "loading something that never loads" >&2
  exec sleep 1000
fi
exec cat
