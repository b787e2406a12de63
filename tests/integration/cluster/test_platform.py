"""What the cluster path must get right before any pod runs, judged by a real API server: Knative's
response-start timeout, one ingress-side Service per agent whatever its namespace, the fence and
Pod Security label of agent namespaces, the gateway's configuration at install, and the images
and cluster domain `clrk install` records for `clrk apply`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from clrk.cluster.configs import POD_SECURITY_ENFORCE
from clrk.errors import ClusterError
from clrk.manifests.compiling import KNATIVE_TIMEOUT_MARGIN_S, ingress_service_name
from clrk.manifests.options import default_image
from tests.support.kube import Kube, write_agent

KSVC = ("serving.knative.dev/v1", "Service")


def _set_timeout(path: Path, timeout: str) -> None:
    path.write_text(path.read_text() + f"  timeout: {timeout}\n")


@pytest.mark.parametrize(("timeout", "seconds"), [("500s", 500), ("250ms", 1), ("100.5s", 101)])
def test_knative_keeps_the_response_start_timeout(
    kube: Kube, namespace: str, tmp_path: Path, timeout: str, seconds: int
) -> None:
    path = write_agent(tmp_path, namespace)
    _set_timeout(path, timeout)
    kube.clrk("apply", "-f", str(path))
    ksvc = kube.read(*KSVC, "bot", namespace)
    assert ksvc
    spec = ksvc["spec"]["template"]["spec"]
    # Stored, not pruned: the field is in Knative's schema, and without it Knative's 300 s default
    # would cut a longer agent whose answer starts only when it ends.
    knative = seconds + KNATIVE_TIMEOUT_MARGIN_S
    assert spec["timeoutSeconds"] == knative and spec["responseStartTimeoutSeconds"] == knative


def test_two_namespaces_with_the_same_agent_name(kube: Kube, namespace: str, tmp_path: Path) -> None:
    other = f"{namespace[:40]}-b"
    kube.cluster.resource("v1", "Namespace").server_side_apply(
        body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}}, field_manager="test"
    )
    first = write_agent(tmp_path / "a", namespace)
    second = write_agent(tmp_path / "b", other)
    kube.clrk("apply", "-f", str(first))
    kube.clrk("apply", "-f", str(second))
    names = {ns: ingress_service_name(ns, "bot") for ns in (namespace, other)}
    assert len(set(names.values())) == 2
    for ns, name in names.items():
        service = kube.read("v1", "Service", name, "clrk")
        assert service and service["metadata"]["annotations"]["clrk.dev/agent-ref"] == f"{ns}/bot"
    kube.clrk("delete", "-f", str(second))
    assert kube.read("v1", "Service", names[other], "clrk") is None
    assert kube.read("v1", "Service", names[namespace], "clrk"), "the other namespace's agent keeps its Service"


@pytest.fixture
def kube_dns(kube: Kube) -> Iterator[str]:
    """A kube-dns Service, as NodeLocal DNSCache in iptables mode answers on its ClusterIP."""
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system"},
        "spec": {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]},
    }
    # The API server picks the address (a fixed one may already belong to another test's Service).
    kube.apply_raw(body, manager="test")
    service = kube.cluster.resource("v1", "Service").get(name="kube-dns", namespace="kube-system")
    yield str(service.spec.clusterIP)
    kube.cluster.resource("v1", "Service").delete(name="kube-dns", namespace="kube-system")


def test_agent_namespaces_are_fenced_and_labelled(kube: Kube, namespace: str, tmp_path: Path, kube_dns: str) -> None:
    kube.clrk("apply", "-f", str(write_agent(tmp_path, namespace)))
    policy = kube.read("networking.k8s.io/v1", "NetworkPolicy", "clrk-agents", namespace)
    assert policy
    gateway, dns = policy["spec"]["egress"]
    assert [p["port"] for p in gateway["ports"]] == [3128]
    assert sorted((p["port"], p["protocol"]) for p in dns["ports"]) == [
        (53, "TCP"), (53, "UDP"), (5353, "TCP"), (5353, "UDP"),
    ]  # fmt: skip
    cidrs = {peer["ipBlock"]["cidr"] for peer in dns["to"] if "ipBlock" in peer}
    assert cidrs == {"169.254.20.10/32", f"{kube_dns}/32"}
    ns = kube.read("v1", "Namespace", namespace)
    assert ns and ns["metadata"]["labels"][POD_SECURITY_ENFORCE] == "baseline"


def test_a_restricted_namespace_is_named_not_silently_broken(kube: Kube, namespace: str, tmp_path: Path) -> None:
    kube.apply_raw(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {POD_SECURITY_ENFORCE: "restricted"}},
        },
        manager="admin",
    )
    result = kube.clrk("apply", "-f", str(write_agent(tmp_path, namespace)), ok=False)
    assert isinstance(result.exception, ClusterError)
    assert f"namespace {namespace} enforces the 'restricted' Pod Security level" in str(result.exception)
    ns = kube.read("v1", "Namespace", namespace)
    assert ns and ns["metadata"]["labels"][POD_SECURITY_ENFORCE] == "restricted", "never overridden"


def _merged(kube: Kube) -> dict[str, object]:
    body = kube.read("v1", "ConfigMap", "clrk-egress-config", "clrk-system")
    assert body, "the gateway mounts clrk-egress-config: it must exist"
    config: dict[str, object] = json.loads(body["data"]["config.json"])
    return config


def test_install_creates_the_gateways_config_and_keeps_what_apply_wrote(
    kube: Kube, namespace: str, tmp_path: Path
) -> None:
    kube.cluster.resource("v1", "ConfigMap").delete(name="clrk-egress-config", namespace="clrk-system")
    kube.clrk("install")
    assert set(_merged(kube)) == {"agents", "injections"}
    kube.clrk("apply", "-f", str(write_agent(tmp_path, namespace)))
    kube.clrk("install")
    agents = _merged(kube)["agents"]
    assert isinstance(agents, dict) and f"{namespace}/bot" in agents, "re-installing keeps the agents' entries"


def test_install_records_the_platform_and_apply_follows_it(kube: Kube, namespace: str, tmp_path: Path) -> None:
    custom = ["--runtime-image", "reg.corp/runtime:9", "--ingress-image", "reg.corp/ingress:9",
              "--egress-image", "reg.corp/egress:9", "--cluster-domain", "corp.internal"]  # fmt: skip
    defaults = ["--runtime-image", default_image("runtime"), "--ingress-image", default_image("ingress"),
                "--egress-image", default_image("egress"), "--cluster-domain", "cluster.local"]  # fmt: skip
    try:
        kube.clrk("install", *custom)
        ingress = kube.read("apps/v1", "Deployment", "clrk-ingress", "clrk")
        egress = kube.read("apps/v1", "Deployment", "clrk-egress", "clrk-system")
        operator = kube.read("apps/v1", "Deployment", "clrk-operator", "clrk-system")
        assert ingress and egress and operator
        assert ingress["spec"]["template"]["spec"]["containers"][0]["image"] == "reg.corp/ingress:9"
        assert {c["image"] for c in egress["spec"]["template"]["spec"]["containers"]} == {"reg.corp/egress:9"}
        env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["CLRK_RUNTIME_IMAGE"] == "reg.corp/runtime:9" and env["CLRK_CLUSTER_DOMAIN"] == "corp.internal"

        kube.clrk("apply", "-f", str(write_agent(tmp_path, namespace)))
        ksvc = kube.read(*KSVC, "bot", namespace)
        assert ksvc
        pod = ksvc["spec"]["template"]["spec"]
        assert pod["initContainers"][0]["image"] == "reg.corp/runtime:9", "apply compiles for the platform installed"
        proxy = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}["CLRK_EGRESS_PROXY"]
        assert proxy == "clrk-egress.clrk-system.svc.corp.internal:3128"

        kube.clrk("apply", "-f", str(write_agent(tmp_path, namespace)), "--runtime-image", "reg.corp/runtime:10")
        ksvc = kube.read(*KSVC, "bot", namespace)
        assert ksvc and ksvc["spec"]["template"]["spec"]["initContainers"][0]["image"] == "reg.corp/runtime:10"
    finally:
        kube.clrk("install", *defaults)
    record = kube.read("v1", "ConfigMap", "clrk-platform", "clrk-system")
    assert record and record["data"]["runtimeImage"] == default_image("runtime")
