#!/bin/sh
# Cannot start ahead: with $CLRK_READY_FD set (warm start) it says why on stderr and exits 3 before
# it is ready. Started on request, it echoes its envelope.
if [ -n "${CLRK_READY_FD:-}" ]; then
  echo "cannot start ahead: no config" >&2
  exit 3
fi
exec cat
