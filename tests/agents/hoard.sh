#!/bin/sh
# Writes more than its sandbox allows. "$1" = big: one 8 MiB file, written by its main process
# itself; many: files of 1000 KiB in $HOME, one after another (64 at most), then waits.
cat >/dev/null
if [ "$1" = big ]; then
  exec head -c 8388608 /dev/zero >"$HOME/big"
fi
i=0
while [ $i -lt 64 ]; do
  head -c 1024000 /dev/zero >"$HOME/part-$i"
  i=$((i + 1))
done
exec sleep 60
