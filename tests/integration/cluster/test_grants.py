"""Tenants cannot use each other's provider keys, and the ingress reads only the Secrets Callers
name, judged by a real API server: `clrk apply` and the operator refuse a policy whose Secret the
admin did not grant to its namespace (and the gateway neither injects nor mounts it), and the
ingress's own service account (impersonated) gets 403 for every Secret no Caller names."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kopf.testing import KopfRunner

from clrk.cluster.applying import Applier, ApplyOptions
from clrk.cluster.operating import registry
from clrk.errors import ClusterError
from tests.support.kube import Kube, eventually, impersonating, write_agent

INGRESS_USER = "system:serviceaccount:clrk:clrk-ingress"
OPERATOR_USER = "system:serviceaccount:clrk-system:clrk-operator"
CIP = ("clrk.dev/v1alpha1", "CredentialInjectionPolicy")
ROLE = ("rbac.authorization.k8s.io/v1", "Role")


def provider_key(kube: Kube, name: str, granted_to: str | None) -> None:
    """The admin's provider-key Secret in clrk-system, granted (or not) to namespaces."""
    annotations = {} if granted_to is None else {"clrk.dev/namespaces": granted_to}
    kube.apply_raw(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": "clrk-system", "annotations": annotations},
            "stringData": {"api-key": f"sk-{name}"},
        },
        manager="admin",
        force=True,
    )


def policy(namespace: str, secret: str, name: str = "anthropic") -> dict[str, Any]:
    return {
        "apiVersion": "clrk.dev/v1alpha1",
        "kind": "CredentialInjectionPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"host": "api.anthropic.com", "secretKeyRef": {"name": secret, "key": "api-key"}},
    }


def injections(kube: Kube) -> list[dict[str, Any]]:
    body = kube.read("v1", "ConfigMap", "clrk-egress-config", "clrk-system")
    assert body
    found: list[dict[str, Any]] = json.loads(body["data"]["config.json"])["injections"]
    return found


def mounted(kube: Kube) -> set[str]:
    gateway = kube.read("apps/v1", "Deployment", "clrk-egress", "clrk-system")
    assert gateway
    (volume,) = [v for v in gateway["spec"]["template"]["spec"]["volumes"] if v["name"] == "secrets"]
    return {s["secret"]["name"] for s in volume["projected"].get("sources") or []}


def injected_for(kube: Kube, namespace: str) -> list[str]:
    return [i["secret"]["name"] for i in injections(kube) if any(a.startswith(f"{namespace}/") for a in i["agents"])]


def test_apply_refuses_a_policy_naming_another_teams_key(kube: Kube, namespace: str, tmp_path: Path) -> None:
    theirs = f"{namespace[:40]}-b-key"
    provider_key(kube, theirs, "team-b")
    folder = tmp_path / "m"
    write_agent(folder, namespace)
    (folder / "policy.yaml").write_text(json.dumps(policy(namespace, theirs)))
    result = kube.clrk("apply", "-f", str(folder), ok=False)
    assert isinstance(result.exception, ClusterError)
    message = str(result.exception)
    assert message.startswith(f"{folder / 'policy.yaml'}: CredentialInjectionPolicy {namespace}/anthropic: ")
    assert f"spec.secretKeyRef.name: Secret clrk-system/{theirs} is not granted to namespace {namespace}" in message
    assert f"annotate --overwrite secret {theirs} clrk.dev/namespaces=team-b,{namespace}" in message
    assert kube.read(*CIP, "anthropic", namespace) is None, "nothing applied"
    assert kube.read("clrk.dev/v1alpha1", "TaskAgent", "bot", namespace) is None
    assert theirs not in mounted(kube) and injected_for(kube, namespace) == []

    provider_key(kube, theirs, f"team-b,{namespace}")  # the admin grants it
    kube.clrk("apply", "-f", str(folder))
    assert injected_for(kube, namespace) == [theirs]
    assert theirs in mounted(kube)
    kube.clrk("delete", "-f", str(folder))
    assert theirs not in mounted(kube)


def test_a_missing_or_platform_secret_is_refused(kube: Kube, namespace: str, tmp_path: Path) -> None:
    for secret, why in (
        (f"{namespace[:40]}-none", "does not exist"),
        ("clrk-platform-key", "one of the platform's own keys"),
    ):
        folder = tmp_path / secret
        write_agent(folder, namespace)
        (folder / "policy.yaml").write_text(json.dumps(policy(namespace, secret)))
        result = kube.clrk("apply", "-f", str(folder), ok=False)
        assert isinstance(result.exception, ClusterError) and why in str(result.exception), result.output
        assert secret not in mounted(kube)


def test_a_policy_made_ungranted_later_leaves_the_gateway(kube: Kube, namespace: str, tmp_path: Path) -> None:
    # Granted at apply, then the admin takes the grant back: the next merge leaves it out.
    mine = f"{namespace[:40]}-key"
    provider_key(kube, mine, namespace)
    folder = tmp_path / "m"
    write_agent(folder, namespace)
    (folder / "policy.yaml").write_text(json.dumps(policy(namespace, mine)))
    kube.clrk("apply", "-f", str(folder))
    assert mine in mounted(kube)
    provider_key(kube, mine, "someone-else")
    result = kube.clrk("apply", "-f", str(write_agent(tmp_path / "other", namespace, name="other")))
    assert f"note: left out of the gateway: CredentialInjectionPolicy {namespace}/anthropic" in result.output
    assert mine not in mounted(kube) and injected_for(kube, namespace) == []


def test_the_operator_leaves_out_an_ungranted_policy_until_granted(
    kube: Kube, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = f"{namespace[:40]}-b-key"
    provider_key(kube, theirs, "team-b")
    monkeypatch.setenv("KUBECONFIG", kube.kubeconfig)
    with KopfRunner(["run", "--standalone", "--namespace", namespace], registry=registry, timeout=90) as runner:
        kube.apply_raw(
            {
                "apiVersion": "clrk.dev/v1alpha1",
                "kind": "TaskAgent",
                "metadata": {"name": "bot", "namespace": namespace},
                "spec": {"template": {"spec": {"image": "example.com/bot:1", "command": ["cat"]}}},
            },
            manager="kubectl",
        )
        kube.apply_raw(policy(namespace, theirs), manager="kubectl")

        def conditions() -> list[dict[str, Any]]:
            body = kube.read(*CIP, "anthropic", namespace) or {}
            found: list[dict[str, Any]] = (body.get("status") or {}).get("conditions") or []
            return found

        (refused,) = eventually(lambda: [c for c in conditions() if c["status"] == "False"])
        assert refused["reason"] == "SecretNotGranted"
        assert (
            f"spec.secretKeyRef.name: Secret clrk-system/{theirs} is not granted to namespace {namespace}"
            in (refused["message"])
        )
        eventually(lambda: kube.read("v1", "ConfigMap", f"agent.{namespace}.bot", "clrk-system"))
        assert injected_for(kube, namespace) == [] and theirs not in mounted(kube)

        provider_key(kube, theirs, "*")  # the admin's choice: every namespace
        eventually(lambda: [c for c in conditions() if c["status"] == "True"])
        eventually(lambda: injected_for(kube, namespace) == [theirs])
        assert theirs in mounted(kube)
    assert runner.exit_code == 0, runner.output
    provider_key(kube, theirs, "team-b")


def caller_secrets(kube: Kube, namespace: str) -> None:
    for name in ("callers", "unrelated"):
        kube.apply_raw(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace},
                "data": {"ops": base64.b64encode(b"secret-ops-key").decode()},
            },
            manager="test",
        )


def ingress_reads(kube: Kube, namespace: str, name: str) -> bool:
    """Whether the ingress's service account may GET that Secret (False on 403)."""
    ingress = impersonating(kube, INGRESS_USER)
    try:
        return ingress.read(ingress.resource("v1", "Secret"), name, namespace) is not None
    except ClusterError as exc:
        if "not allowed" not in str(exc):
            raise
        return False


CALLER = """\
apiVersion: clrk.dev/v1alpha1
kind: Caller
metadata: {{name: ops, namespace: {namespace}}}
spec:
  keySecretRef: {{name: callers, key: ops}}
  agents: ["*"]
"""


def test_the_ingress_reads_only_the_secrets_callers_name(kube: Kube, namespace: str, tmp_path: Path) -> None:
    caller_secrets(kube, namespace)
    assert not ingress_reads(kube, namespace, "callers"), "no Caller names it yet"
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "caller.yaml").write_text(CALLER.format(namespace=namespace))
    kube.clrk("apply", "-f", str(folder))
    eventually(lambda: ingress_reads(kube, namespace, "callers"))  # RBAC follows in a moment
    assert not ingress_reads(kube, namespace, "unrelated"), "a Secret no Caller names stays out of reach"
    assert not ingress_reads(kube, "clrk-system", "clrk-ca-key")
    assert not ingress_reads(kube, "clrk-system", "clrk-platform-key")
    kube.clrk("delete", "-f", str(folder))
    eventually(lambda: not ingress_reads(kube, namespace, "callers"))  # gone with its last Caller
    assert kube.read(*ROLE, "clrk-ingress-callers", namespace) is None


def test_prune_takes_the_ingress_right_away(kube: Kube, namespace: str, tmp_path: Path) -> None:
    caller_secrets(kube, namespace)
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "caller.yaml").write_text(CALLER.format(namespace=namespace))
    write_agent(folder, namespace)
    kube.clrk("apply", "-f", str(folder), "--apply-set", namespace)
    eventually(lambda: ingress_reads(kube, namespace, "callers"))
    (folder / "caller.yaml").unlink()
    kube.clrk("apply", "-f", str(folder), "--apply-set", namespace, "--prune")
    eventually(lambda: not ingress_reads(kube, namespace, "callers"))


@pytest.fixture
def operator(kube: Kube, namespace: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[KopfRunner]:
    monkeypatch.setenv("KUBECONFIG", kube.kubeconfig)
    with KopfRunner(["run", "--standalone", "--namespace", namespace], registry=registry, timeout=60) as runner:
        yield runner
    assert runner.exit_code == 0, runner.output


def test_the_operator_keeps_the_ingress_role_in_step(kube: Kube, namespace: str, operator: KopfRunner) -> None:
    caller_secrets(kube, namespace)
    body = {
        "apiVersion": "clrk.dev/v1alpha1",
        "kind": "Caller",
        "metadata": {"name": "ops", "namespace": namespace},
        "spec": {"keySecretRef": {"name": "callers", "key": "ops"}, "agents": ["*"]},
    }
    kube.apply_raw(body, manager="kubectl")
    eventually(lambda: ingress_reads(kube, namespace, "callers"))
    assert not ingress_reads(kube, namespace, "unrelated")
    kube.cluster.resource("clrk.dev/v1alpha1", "Caller").delete(name="ops", namespace=namespace)
    eventually(lambda: kube.read("clrk.dev/v1alpha1", "Caller", "ops", namespace) is None)
    eventually(lambda: not ingress_reads(kube, namespace, "callers"))


def test_the_operators_own_rights_suffice_to_grant_the_ingress(kube: Kube, namespace: str) -> None:
    # What the operator's service account may do under the installed ClusterRole: the API server
    # lets it write the Role only because it holds `get` on Secrets itself.
    caller_secrets(kube, namespace)
    kube.apply_raw(
        {
            "apiVersion": "clrk.dev/v1alpha1",
            "kind": "Caller",
            "metadata": {"name": "ops", "namespace": namespace},
            "spec": {"keySecretRef": {"name": "callers", "key": "ops"}, "agents": ["*"]},
        },
        manager="kubectl",
    )
    as_operator = Applier(impersonating(kube, OPERATOR_USER), ApplyOptions(), lambda _line: None)
    as_operator.sync_caller_access({namespace})
    assert ingress_reads(kube, namespace, "callers")
    kube.cluster.resource("clrk.dev/v1alpha1", "Caller").delete(name="ops", namespace=namespace)
    as_operator.sync_caller_access({namespace})
    assert not ingress_reads(kube, namespace, "callers")


def test_install_takes_the_old_rule_on_every_secret_away(kube: Kube, namespace: str) -> None:
    caller_secrets(kube, namespace)
    # What an earlier clrk installed: the ingress's ClusterRole with `get` on every Secret.
    kube.apply_raw(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "clrk-ingress"},
            "rules": [
                {"apiGroups": ["clrk.dev"], "resources": ["taskagents", "callers"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
            ],
        },
        manager="clrk",
    )
    # The API server's RBAC authorizer follows role changes through a watch: a moment later.
    eventually(lambda: ingress_reads(kube, namespace, "unrelated"))
    kube.clrk("install")
    eventually(lambda: not ingress_reads(kube, namespace, "unrelated"))
