#!/usr/bin/env bash
# Installs the system tools clrk runs (bubblewrap for sandboxes, socat to bridge the egress proxy
# into them, jq for the jq-bot example, redis-server for the egress gateway's Redis budget store,
# which the tests run against a real one) through apt-get when they are missing and we are root.
# Idempotent: prints nothing and exits 0 when all are present.
set -euo pipefail
declare -A pkg=([bwrap]=bubblewrap [socat]=socat [jq]=jq [redis-server]=redis-server)
missing=()
for tool in "${!pkg[@]}"; do command -v "$tool" >/dev/null 2>&1 || missing+=("${pkg[$tool]}"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing ${missing[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "warning: missing system packages: ${missing[*]}" >&2
  echo "         install them (e.g. 'sudo apt-get install ${missing[*]}'); without bubblewrap," >&2
  echo "         clrk falls back to a plain sandbox and says so loudly." >&2
fi
