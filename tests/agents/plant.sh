#!/bin/sh
# Plants symlinks to $1 (a root-owned folder holding a file "keep") wherever the shim cleans up
# after it: in /tmp (named after $2), in $TMPDIR and the work dir, and in place of its own $HOME.
# Answers "planted".
cat >/dev/null
victim=$1
mark=$2
ln -s "$victim/keep" "/tmp/$mark-file-link"
ln -s "$victim" "/tmp/$mark-dir-link"
mkdir "/tmp/$mark-dir" && ln -s "$victim" "/tmp/$mark-dir/inner-link"
ln -s "$victim" "$TMPDIR/dir-link"
ln -s "$victim/keep" ./file-link
mv "$HOME" "$HOME.away" && ln -s "$victim" "$HOME"
echo planted
