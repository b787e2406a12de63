#!/usr/bin/env bash
# Prints the path of a Python >= 3.12 interpreter, or explains what to install and exits 1.
# Looks at python3.13, python3.12, python3 on PATH, then pyenv's versions.
set -u
ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; }
candidates=(python3.13 python3.12 python3)
for c in "${candidates[@]}"; do
  p=$(command -v "$c" 2>/dev/null) || continue
  # pyenv shims answer even when the version behind them is not selected: ask the real binary.
  real=$("$p" -c 'import sys; print(sys.executable)' 2>/dev/null) || continue
  if ok "$real"; then echo "$real"; exit 0; fi
done
root=${PYENV_ROOT:-$HOME/.pyenv}
for d in $(ls -d "$root"/versions/3.13* "$root"/versions/3.12* 2>/dev/null | sort -rV); do
  if [ -x "$d/bin/python3" ] && ok "$d/bin/python3"; then echo "$d/bin/python3"; exit 0; fi
done
echo "error: clrk needs Python >= 3.12 (mitmproxy requires it) and none was found." >&2
echo "       Install one (apt-get install python3.12, or 'pyenv install 3.12') and run make again." >&2
exit 1
