#!/usr/bin/env bash
# Makes sure the cluster test tier has its binaries: a real kube-apiserver (v1.20.2) and etcd
# (3.4.23) under $CLRK_ENVTEST_DIR/bin (default ~/.cache/clrk-envtest/bin), built offline from
# Debian packages by hack/build-kube-apiserver (~4 min on 2 cores the first time;
# instant afterwards). tests/integration/cluster starts them once per pytest session.
#
#   usage: hack/envtest.sh            prints the bin folder
#          hack/envtest.sh --check    exits 1 (saying why) when the binaries are missing, builds nothing
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${CLRK_ENVTEST_DIR:-$HOME/.cache/clrk-envtest}/bin
if [ -x "$bin/kube-apiserver" ] && [ -x "$bin/etcd" ]; then echo "$bin"; exit 0; fi
if [ "${1:-}" = "--check" ]; then
  echo "missing $bin/kube-apiserver or $bin/etcd: run hack/envtest.sh to build them" >&2
  exit 1
fi
builder=$root/hack/build-kube-apiserver
if [ ! -x "$builder" ]; then
  echo "error: $builder not found" >&2
  echo "       (or put a kube-apiserver and etcd of your own into $bin)" >&2
  exit 1
fi
exec "$builder"
