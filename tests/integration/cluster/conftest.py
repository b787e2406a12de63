"""The cluster tier: one real kube-apiserver (and etcd) per test session, with Knative's CRDs and
``clrk install`` applied, driven through the real CLI commands.

Skips, saying how to build the binaries, when they are missing. Knative's CRDs come from the
repository's ``tests/data/crds`` (copies of upstream's) (stripped of ``default: ""`` and ``x-kubernetes-validations``,
which the 1.20 server refuses). No controllers run: a Knative Service is stored, never Ready.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clrk.cluster import Cluster, connect
from clrk.cluster.installing import wait_established
from clrk.manifests.documents import load_all
from tests.support.envtest import EnvTest, missing_binaries
from tests.support.kube import Kube

REPO = Path(__file__).resolve().parents[3]
SHARED_CRDS = REPO / "tests" / "data" / "crds"


def knative_crds() -> list[dict[str, Any]]:
    """The upstream Knative CRDs, made acceptable to a 1.20 API server."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            out = {
                k: strip(v)
                for k, v in node.items()
                if k != "x-kubernetes-validations" and not (k == "default" and v == "")
            }
            # A list-map key must have a default or be required: the default just went, so require it.
            keys = out.get("x-kubernetes-list-map-keys")
            if keys and isinstance(out.get("items"), dict):
                out["items"]["required"] = sorted({*out["items"].get("required", []), *keys})
            return out
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    out = []
    for path in sorted(SHARED_CRDS.glob("*.yaml")):
        out += [strip(doc) for doc in load_all(path.read_text()) if doc]
    assert out, f"no Knative CRDs in {SHARED_CRDS}"
    return out


def _install_knative(cluster: Cluster) -> None:
    crds = cluster.resource("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    for crd in knative_crds():
        crds.server_side_apply(body=crd, field_manager="test")
    wait_established(cluster, [crd["metadata"]["name"] for crd in knative_crds()])
    # What a real Knative Serving install leaves for `clrk install` to patch.
    cluster.resource("v1", "Namespace").server_side_apply(
        body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "knative-serving"}}, field_manager="test"
    )
    features = {"_example": "see knative docs"}
    cluster.resource("v1", "ConfigMap").server_side_apply(
        body={
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "config-features", "namespace": "knative-serving"},
            "data": features,
        },
        field_manager="knative-install",
    )


@pytest.fixture(scope="session")
def kube() -> Iterator[Kube]:
    why = missing_binaries()
    if why:
        pytest.skip(f"cluster tier skipped: {why}")
    env = EnvTest.start()
    try:
        cluster = connect(str(env.kubeconfig))
        _install_knative(cluster)
        kube = Kube(env, cluster)
        kube.clrk("install")
        yield kube
    finally:
        env.stop()


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> str:
    """A fresh namespace per test, so tests never see each other's objects."""
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    kube.cluster.resource("v1", "Namespace").server_side_apply(
        body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, field_manager="test"
    )
    return name
