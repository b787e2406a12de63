#!/usr/bin/env bash
# A local cluster for the e2e tests and for trying the cluster path: kind + Knative Serving
# (with Kourier) + Knative Eventing, clrk's images built and loaded, `clrk install`.
# Idempotent: re-running reuses the cluster and re-applies the rest.
#
#   usage: hack/kind-up.sh              then: pytest -m e2e --with-e2e tests/e2e
#          hack/kind-up.sh --down       deletes the cluster
#
# Needs docker, kind, kubectl on PATH and network access to github.com (Knative's release YAML).
# Environment: CLRK_KIND_NAME (default clrk), KNATIVE_SERVING (knative-v1.23.0),
# KNATIVE_EVENTING (knative-v1.22.0), KOURIER (knative-v1.23.0), CLRK_SKIP_IMAGES=1 to use the
# published images instead of building them here.
#
# Not run in the session that wrote it (no Docker engine there); see docs/cluster.md.
# Note: kind's default CNI (kindnet) does not enforce NetworkPolicy; the agents' egress fence is
# applied but only enforced on a CNI that implements it (Calico, Cilium).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
name=${CLRK_KIND_NAME:-clrk}
serving=${KNATIVE_SERVING:-knative-v1.23.0}
eventing=${KNATIVE_EVENTING:-knative-v1.22.0}
kourier=${KOURIER:-knative-v1.23.0}
clrk=${CLRK:-$root/.venv/bin/clrk}
version=$("$root/.venv/bin/python" -c 'import clrk; print(clrk.__version__)')
ctx="kind-$name"
k() { kubectl --context "$ctx" "$@"; }

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not on PATH" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "error: no Docker engine answers (docker info)" >&2; exit 1; }

if [ "${1:-}" = "--down" ]; then kind delete cluster --name "$name"; exit 0; fi

if ! kind get clusters | grep -qx "$name"; then
  echo "==> kind cluster $name"
  kind create cluster --name "$name" --wait 120s
fi

echo "==> Knative Serving $serving, Kourier $kourier"
k apply -f "https://github.com/knative/serving/releases/download/$serving/serving-crds.yaml"
k apply -f "https://github.com/knative/serving/releases/download/$serving/serving-core.yaml"
k apply -f "https://github.com/knative/net-kourier/releases/download/$kourier/kourier.yaml"
k patch configmap/config-network -n knative-serving --type merge \
  -p '{"data":{"ingress-class":"kourier.ingress.networking.knative.dev"}}'
# Images loaded into kind have no registry to resolve tags against.
k patch configmap/config-deployment -n knative-serving --type merge \
  -p '{"data":{"registries-skipping-tag-resolving":"kind.local,ko.local,dev.local,ghcr.io"}}'

echo "==> Knative Eventing $eventing"
k apply -f "https://github.com/knative/eventing/releases/download/$eventing/eventing-crds.yaml"
k apply -f "https://github.com/knative/eventing/releases/download/$eventing/eventing-core.yaml"

for ns in knative-serving kourier-system knative-eventing; do
  k wait deployment --all -n "$ns" --for=condition=Available --timeout=300s
done

if [ "${CLRK_SKIP_IMAGES:-}" != 1 ]; then
  echo "==> clrk images $version (built for this machine's platform, loaded into kind)"
  docker build -q -f "$root/platform/Dockerfile.ingress" -t "ghcr.io/clrk-dev/clrk-ingress:$version" "$root"
  docker build -q -f "$root/platform/Dockerfile.egress" -t "ghcr.io/clrk-dev/clrk-egress:$version" "$root"
  docker build -q -f "$root/runtime/Dockerfile" -t "ghcr.io/clrk-dev/clrk-runtime:$version" "$root"
  docker build -q -t "ghcr.io/clrk-dev/examples/jq-bot:$version" "$root/examples/jq-bot"
  for image in clrk-ingress clrk-egress clrk-runtime examples/jq-bot; do
    kind load docker-image --name "$name" "ghcr.io/clrk-dev/$image:$version"
  done
fi

echo "==> clrk install"
"$clrk" install --context "$ctx"
k rollout status deployment/clrk-egress -n clrk-system --timeout=180s
k rollout status deployment/clrk-ingress -n clrk --timeout=180s
echo "ready: kubectl --context $ctx"
