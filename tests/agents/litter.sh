#!/bin/sh
# Leaves things behind wherever a plain sandbox can write: in /tmp, /var/tmp and /dev/shm a file,
# a tree, a folder it made unreadable (000), a fifo and a symlink, each named after $1; and, with
# $2 > 0, that many files in a folder of /tmp and as many in $HOME. Answers "left".
cat >/dev/null
mark=$1
many=${2:-0}
for place in /tmp /var/tmp /dev/shm; do
  echo data >"$place/$mark-file"
  mkdir -p "$place/$mark-tree/a/b" && echo data >"$place/$mark-tree/a/b/file"
  mkdir "$place/$mark-locked" && echo data >"$place/$mark-locked/file" && chmod 000 "$place/$mark-locked"
  mkfifo "$place/$mark-fifo"
  ln -s "$place/$mark-file" "$place/$mark-link"
done
if [ "$many" -gt 0 ]; then
  mkdir "/tmp/$mark-many" "$HOME/many"
  (cd "/tmp/$mark-many" && seq "$many" | xargs touch)
  (cd "$HOME/many" && seq "$many" | xargs touch)
fi
mkdir -p "$HOME/.cache/x" && chmod 000 "$HOME/.cache"
echo left
