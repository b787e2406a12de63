"""The cluster tier: one real kube-apiserver (and etcd) per test session, with Knative's CRDs and
``clrk install`` applied, driven through the real CLI commands.

Skips, saying how to build the binaries, when they are missing. Knative's CRDs come from the
repository's ``tests/data/crds`` (copies of upstream's) (stripped of ``default: ""`` and ``x-kubernetes-validations``,
which the 1.20 server refuses). No controllers run: a Knative Service is stored, never Ready.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from clrk.cluster import connect
from tests.support.envtest import EnvTest, missing_binaries
from tests.support.kube import Kube, install_knative


@pytest.fixture(scope="session")
def kube() -> Iterator[Kube]:
    why = missing_binaries()
    if why:
        pytest.skip(f"cluster tier skipped: {why}")
    env = EnvTest.start()
    try:
        cluster = connect(str(env.kubeconfig))
        install_knative(cluster)
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
