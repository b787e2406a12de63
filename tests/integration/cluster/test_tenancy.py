"""Tenancy in a cluster, judged by a real API server: what `clrk install`, `clrk apply` and the
operator leave there. Agents published cluster-local and fenced on the way in, each namespace's
keys derived for it alone (the platform key never copied into an agent namespace, and the old
copies removed), the gateway without API rights, mounting exactly the Secrets its injections
name. No CNI runs here: the NetworkPolicies are checked as stored, not enforced."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from kopf.testing import KopfRunner

from clrk.cluster.operating import registry
from clrk_runtime.protocol.keys import namespace_key
from tests.support.kube import Kube, eventually, platform_key, write_agent

KSVC = ("serving.knative.dev/v1", "Service")
POLICY = ("networking.k8s.io/v1", "NetworkPolicy")
DEPLOYMENT = ("apps/v1", "Deployment")


def _keys(kube: Kube, namespace: str) -> dict[str, bytes]:
    secret = kube.read("v1", "Secret", "clrk-agent-keys", namespace)
    assert secret, f"no keys in {namespace}"
    return {k: base64.b64decode(v) for k, v in secret["data"].items()}


def _second_namespace(kube: Kube, namespace: str) -> str:
    other = f"{namespace[:40]}-b"
    kube.apply_raw({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}}, manager="test")
    return other


def test_each_namespace_gets_keys_of_its_own(kube: Kube, namespace: str, tmp_path: Path) -> None:
    other = _second_namespace(kube, namespace)
    kube.clrk("apply", "-f", str(write_agent(tmp_path / "a", namespace)))
    kube.clrk("apply", "-f", str(write_agent(tmp_path / "b", other)))
    platform = platform_key(kube)
    mine, theirs = _keys(kube, namespace), _keys(kube, other)
    assert mine == {
        "proxy-token": namespace_key(platform, "proxy-token", namespace),
        "request": namespace_key(platform, "request", namespace),
    }
    assert platform not in mine.values(), "the platform key itself is never in an agent namespace"
    assert not set(mine.values()) & set(theirs.values())
    for ns in (namespace, other):
        assert kube.read("v1", "Secret", "clrk-egress-token", ns) is None
        assert kube.read("v1", "Secret", "clrk-platform-key", ns) is None


def test_agents_are_cluster_local_and_fenced_on_the_way_in(kube: Kube, namespace: str, tmp_path: Path) -> None:
    kube.clrk("apply", "-f", str(write_agent(tmp_path, namespace)))
    ksvc = kube.read(*KSVC, "bot", namespace)
    assert ksvc and ksvc["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
    policy = kube.read(*POLICY, "clrk-agents-ingress", namespace)
    assert policy, "stored as rendered (the API server validated it)"
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    serving, metrics = spec["ingress"]
    assert [p["port"] for p in serving["ports"]] == [8012] and [p["port"] for p in metrics["ports"]] == [9090]
    namespaces = [peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in serving["from"]]
    assert namespaces == ["clrk", "knative-serving", "kourier-system"]
    assert kube.read(*POLICY, "clrk-agents", namespace), "the egress fence stays"


def test_the_knative_namespaces_installed_are_the_ones_apply_fences_with(
    kube: Kube, namespace: str, tmp_path: Path
) -> None:
    try:
        kube.clrk("install", "--knative-gateway-namespace", "istio-system")
        record = kube.read("v1", "ConfigMap", "clrk-platform", "clrk-system")
        assert record and record["data"]["knativeGatewayNamespace"] == "istio-system"
        kube.clrk("apply", "-f", str(write_agent(tmp_path, namespace)))
        policy = kube.read(*POLICY, "clrk-agents-ingress", namespace)
        assert policy
        peers = policy["spec"]["ingress"][0]["from"]
        assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-system"}}} in peers
    finally:
        kube.clrk("install")


def test_apply_removes_the_platform_key_an_earlier_version_copied(kube: Kube, namespace: str, tmp_path: Path) -> None:
    other = _second_namespace(kube, namespace)
    old = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "clrk-egress-token",
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "clrk", "clrk.dev/copied-from": "clrk-system"},
        },
        "data": {"key": base64.b64encode(b"old platform key").decode()},
    }
    kube.apply_raw(old, manager="clrk")
    someone_elses = {**old, "metadata": {"name": "clrk-egress-token", "namespace": other}}
    kube.apply_raw(someone_elses, manager="them")
    kube.clrk("apply", "-f", str(write_agent(tmp_path / "a", namespace)))
    kube.clrk("apply", "-f", str(write_agent(tmp_path / "b", other)))
    assert kube.read("v1", "Secret", "clrk-egress-token", namespace) is None
    assert kube.read("v1", "Secret", "clrk-egress-token", other), "a Secret clrk did not copy is left alone"


def _rbac(kind: str) -> tuple[str, str]:
    return ("rbac.authorization.k8s.io/v1", kind)


def test_install_takes_the_gateways_api_rights_away(kube: Kube) -> None:
    # What an earlier clrk installed: a ClusterRole on every Secret, bound to the gateway.
    kube.apply_raw(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "clrk-egress"},
            "rules": [{"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["get", "list", "watch"]}],
        },
        manager="clrk",
    )
    kube.apply_raw(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "clrk-egress"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "clrk-egress"},
            "subjects": [{"kind": "ServiceAccount", "name": "clrk-egress", "namespace": "clrk-system"}],
        },
        manager="clrk",
    )
    kube.apply_raw(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "clrk-egress-token", "namespace": "clrk-system"},
            "stringData": {"key": "old"},
        },
        manager="clrk",
    )
    before = platform_key(kube)
    kube.clrk("install")
    assert kube.read(*_rbac("ClusterRole"), "clrk-egress") is None
    assert kube.read(*_rbac("ClusterRoleBinding"), "clrk-egress") is None
    assert kube.read("v1", "Secret", "clrk-egress-token", "clrk-system") is None
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        bindings = kube.cluster.resource(*_rbac(kind)).get().to_dict()["items"]
        for binding in bindings:
            subjects = binding.get("subjects") or []
            assert not any(s["name"] == "clrk-egress" for s in subjects), binding["metadata"]["name"]
    account = kube.read("v1", "ServiceAccount", "clrk-egress", "clrk-system")
    gateway = kube.read(*DEPLOYMENT, "clrk-egress", "clrk-system")
    assert account and account["automountServiceAccountToken"] is False
    assert gateway and gateway["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert platform_key(kube) == before, "re-installing keeps the platform key"
    copy = kube.read("v1", "Secret", "clrk-platform-key", "clrk")
    assert copy and base64.b64decode(copy["data"]["key"]).strip() == before, "the ingress's copy"


def _policy(namespace: str, name: str, secret: str) -> str:
    return f"""\
apiVersion: clrk.dev/v1alpha1
kind: CredentialInjectionPolicy
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  host: api.{name}.example
  header: x-api-key
  secretKeyRef: {{name: {secret}, key: api-key}}
"""


def _gateway_sources(kube: Kube) -> list[dict[str, Any]]:
    gateway = kube.read(*DEPLOYMENT, "clrk-egress", "clrk-system")
    assert gateway
    (volume,) = [v for v in gateway["spec"]["template"]["spec"]["volumes"] if v["name"] == "secrets"]
    sources: list[dict[str, Any]] = volume["projected"].get("sources") or []
    return sources


def test_a_new_policys_secret_is_mounted_into_the_gateway(kube: Kube, namespace: str, tmp_path: Path) -> None:
    kube.apply_raw(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "team-credentials",
                "namespace": "clrk-system",
                "annotations": {"clrk.dev/namespaces": namespace},
            },
            "stringData": {"api-key": "sk-team"},
        },
        manager="admin",
        force=True,
    )
    folder = tmp_path / "m"
    write_agent(folder, namespace)
    (folder / "policy.yaml").write_text(_policy(namespace, "team", "team-credentials"))
    kube.clrk("apply", "-f", str(folder))
    (tmp_path / "stolen.yaml").write_text(_policy(namespace, "stolen", "clrk-platform-key"))
    refused = kube.clrk("apply", "-f", str(tmp_path / "stolen.yaml"), ok=False)
    assert "one of the platform's own keys" in str(refused.exception)
    sources = {s["secret"]["name"]: s["secret"] for s in _gateway_sources(kube)}
    assert sources["team-credentials"] == {
        "name": "team-credentials",
        "optional": True,
        "items": [{"key": "api-key", "path": "team-credentials/api-key"}],
    }
    assert "clrk-platform-key" not in sources, "a policy cannot have the gateway read the platform's own keys"
    kube.clrk("install")  # install owns the rest of the Deployment: no conflict, the sources stay
    assert "team-credentials" in {s["secret"]["name"] for s in _gateway_sources(kube)}
    kube.clrk("delete", "-f", str(folder))
    assert "team-credentials" not in {s["secret"]["name"] for s in _gateway_sources(kube)}


def test_the_operator_gives_a_gitops_agents_namespace_its_keys(
    kube: Kube, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", kube.kubeconfig)
    args = ["run", "--standalone", "--namespace", namespace]
    with KopfRunner(args, registry=registry, timeout=60) as runner:
        body = {
            "apiVersion": "clrk.dev/v1alpha1",
            "kind": "TaskAgent",
            "metadata": {"name": "bot", "namespace": namespace},
            "spec": {"template": {"spec": {"image": "example.com/bot:1", "command": ["/bin/sh", "-c", "cat"]}}},
        }
        kube.apply_raw(body, manager="kubectl")
        eventually(lambda: kube.read("v1", "Secret", "clrk-agent-keys", namespace))
        eventually(lambda: kube.read(*POLICY, "clrk-agents-ingress", namespace))
        ksvc = eventually(lambda: kube.read(*KSVC, "bot", namespace))
        assert ksvc["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
    assert runner.exit_code == 0, runner.output
    assert _keys(kube, namespace)["request"] == namespace_key(platform_key(kube), "request", namespace)
