"""``clrk install``: put the platform onto a cluster that already runs Knative Serving.

Idempotent: the static objects are server-side applied (field manager ``clrk``); the CA and the
egress token key are created once and kept on later runs (rotating them would cut every running
agent off from the gateway); Knative's ``config-features`` gets the four flags the agent pods need.
"""

from __future__ import annotations

import time

from clrk.cluster.applying import Applier, ApplyOptions, Report
from clrk.cluster.configs import ca_objects, install_objects, knative_features, token_secret
from clrk.cluster.connecting import Cluster
from clrk.cluster.failures import missing_kind
from clrk.errors import ClusterError
from clrk.manifests.policies import SYSTEM_NAMESPACE

__all__ = ["install", "wait_established"]

_CRD = "CustomResourceDefinition"


def _require_knative(cluster: Cluster, report: Report) -> None:
    cluster.resource("serving.knative.dev/v1", "Service")  # raises, naming Knative Serving
    try:
        cluster.resource("sources.knative.dev/v1", "PingSource")
    except ClusterError:
        report(f"note: {missing_kind('sources.knative.dev/v1', 'PingSource', cluster.context)}")


def wait_established(cluster: Cluster, names: list[str], timeout: float = 60.0) -> None:
    """Until the API server serves our CRDs, applying a TaskAgent would fail: wait for them."""
    crds = cluster.resource("apiextensions.k8s.io/v1", _CRD)
    deadline = time.monotonic() + timeout
    pending = list(names)
    while pending:
        body = cluster.read(crds, pending[0], None) or {}
        conditions = (body.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
            pending.pop(0)
        elif time.monotonic() > deadline:
            raise ClusterError(f"CRD {pending[0]} not established after {timeout:g}s: see `kubectl describe crd`")
        else:
            time.sleep(0.2)


def install(cluster: Cluster, report: Report) -> None:
    """Apply the platform, the generated keys when absent, and Knative's feature flags."""
    _require_knative(cluster, report)
    applier = Applier(cluster, ApplyOptions(), report)
    for body in install_objects():
        applier.apply(body, "platform/config")
    wait_established(cluster, [b["metadata"]["name"] for b in install_objects() if b["kind"] == _CRD])
    secrets = applier.get(cluster.resource("v1", "Secret"), "clrk-ca-key", SYSTEM_NAMESPACE)
    if secrets is None:
        for body in ca_objects():
            applier.apply(body, "the generated CA")
    if applier.get(cluster.resource("v1", "Secret"), "clrk-egress-token", SYSTEM_NAMESPACE) is None:
        applier.apply(token_secret(), "the generated egress token key")
    features = knative_features()
    meta = features["metadata"]
    if applier.get(cluster.resource("v1", "ConfigMap"), meta["name"], meta["namespace"]) is None:
        raise ClusterError(
            f"Knative Serving looks incomplete: no ConfigMap {meta['namespace']}/{meta['name']}; "
            "reinstall it (https://knative.dev/docs/install/yaml-install/serving/install-serving-with-yaml/)"
        )
    forced = Applier(cluster, ApplyOptions(force_conflicts=True), report)
    forced.apply(features, "platform/config/knative-features.yaml")
