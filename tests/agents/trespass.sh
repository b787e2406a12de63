#!/bin/sh
# Points what the shim reads or removes at its close somewhere else, as an attacker would; the
# request's data says how: {"mode": ..., "target": a host path, "many": a count}. Answers a line
# naming the mode (on stdout) unless the mode is about an empty answer.
event=$(cat)
get() { printf '%s' "$event" | jq -r ".data.$1 // empty"; }
mode=$(get mode)
target=$(get target)
headers=$CLRK_METADATA_RESPONSE_HEADERS
case "$mode" in
  swap-dirs)  # every directory the sandbox was given becomes a symlink to $target
    meta=$(dirname "$headers")
    work=$PWD
    cd /
    for dir in "$HOME" "$TMPDIR" "$work" "$meta"; do
      rm -rf "$dir" 2>/dev/null
      ln -s "$target" "$dir" 2>/dev/null
    done
    ln -s "$target" "$meta/link" 2>/dev/null
    ln -s "$target" "$HOME/link" 2>/dev/null ;;
  headers-fifo) mkfifo "$headers" ;;
  headers-symlink) ln -s "$target" "$headers" ;;
  headers-meta-symlink)  # meta itself a symlink to a folder holding a "headers" file
    meta=$(dirname "$headers")
    rm -rf "$meta" 2>/dev/null && ln -s "$target" "$meta" ;;
  headers-directory) mkdir "$headers" ;;
  headers-huge) printf 'Status: 201\n' >"$headers" && truncate -s 256M "$headers" ;;
  plain) ;;
  content-type) printf 'Content-Type: %b\n' "$(get value)" >"$headers" ;;
  status) printf 'Status: %s\n' "$(get value)" >"$headers" ;;
  status-empty) printf 'Status: %s\n' "$(get value)" >"$headers"; exit 0 ;;
  many)  # $many entries in meta/many (a host folder for both kinds), for the shim to remove;
    # then "ready" beside them, and a wait (at most 30 s) for SIGUSR1 from the test
    meta=$(dirname "$headers")
    mkdir "$meta/many" && (cd "$meta/many" && seq "$(get many)" | xargs touch)
    released= i=0
    trap 'released=1' USR1
    : >"$meta/ready"
    while [ -z "$released" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done ;;
  stderr-flood)  # $many lines of 1 KiB on stderr
    yes "$(printf '%01024d' 0)" | head -n "$(get many)" >&2 ;;
esac
echo "{\"mode\": \"$mode\"}"
