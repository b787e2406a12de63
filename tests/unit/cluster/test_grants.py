"""Tenants cannot use each other's provider keys, and the ingress may read only the Secrets Callers
name: the pure half (:mod:`clrk.cluster.grants`), fed the objects the compiler makes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from clrk.cluster.configs import gateway_secrets, install_objects
from clrk.cluster.grants import (
    GRANT_ANNOTATION,
    caller_access_objects,
    caller_secret_names,
    grant_problem,
    granted,
    granted_configmaps,
    injected_secrets,
)
from clrk.cluster.merging import merged_egress_config
from clrk.manifests import load_bundle
from clrk.manifests.policies import egress_configmaps

AGENT = """\
apiVersion: clrk.dev/v1alpha1
kind: TaskAgent
metadata: {{name: bot, namespace: {namespace}}}
spec:
  template:
    spec: {{image: "example.com/bot:1", command: [cat]}}
---
apiVersion: clrk.dev/v1alpha1
kind: CredentialInjectionPolicy
metadata: {{name: anthropic, namespace: {namespace}}}
spec:
  host: api.anthropic.com
  secretKeyRef: {{name: {secret}, key: api-key}}
"""


def _secret(name: str, namespaces: str | None) -> dict[str, Any]:
    annotations = {} if namespaces is None else {GRANT_ANNOTATION: namespaces}
    return {"metadata": {"name": name, "namespace": "clrk-system", "annotations": annotations}}


def test_only_the_namespaces_the_secret_names_may_use_it() -> None:
    both = _secret("k", " team-a , team-b")
    assert granted("k", both, "team-a") and granted("k", both, "team-b")
    assert not granted("k", both, "team-c")
    assert not granted("k", _secret("k", None), "team-a"), "no annotation: nobody"
    assert not granted("k", _secret("k", ""), "team-a")
    assert not granted("k", None, "team-a"), "a missing Secret is granted to nobody"
    assert granted("k", _secret("k", "*"), "anyone")
    assert not granted("clrk-platform-key", _secret("clrk-platform-key", "*"), "team-a"), "the platform's own, never"


def test_the_refusal_says_what_the_admin_runs() -> None:
    problem = grant_problem("team-b-key", _secret("team-b-key", "team-b"), "team-a")
    assert problem is not None
    assert "Secret clrk-system/team-b-key is not granted to namespace team-a" in problem
    assert "kubectl -n clrk-system annotate --overwrite secret team-b-key clrk.dev/namespaces=team-b,team-a" in problem
    missing = grant_problem("nope", None, "team-a")
    assert missing and "does not exist" in missing and "clrk.dev/namespaces=team-a" in missing
    assert grant_problem("team-b-key", _secret("team-b-key", "team-b"), "team-b") is None


def _configmaps(tmp_path: Path, namespace: str, secret: str) -> list[dict[str, Any]]:
    path = tmp_path / f"{namespace}.yaml"
    path.write_text(AGENT.format(namespace=namespace, secret=secret))
    return egress_configmaps(load_bundle([str(path)]).manifests)


def test_a_tenant_naming_another_teams_key_gets_no_injection(tmp_path: Path) -> None:
    # Team a's policy names the Secret the admin meant for team b.
    configmaps = _configmaps(tmp_path, "team-a", "team-b-key") + _configmaps(tmp_path, "team-b", "team-b-key")
    secrets = {"team-b-key": _secret("team-b-key", "team-b")}
    assert injected_secrets(configmaps) == {"team-b-key"}
    allowed, refused = granted_configmaps(configmaps, secrets)
    merged = json.loads(merged_egress_config(allowed)["data"]["config.json"])
    assert [i["agents"] for i in merged["injections"]] == [["team-b/bot"]], "b's key goes with b's agents only"
    assert refused == [
        "CredentialInjectionPolicy team-a/anthropic: spec.secretKeyRef.name: "
        + str(grant_problem("team-b-key", secrets["team-b-key"], "team-a"))
    ]
    assert "api.anthropic.com" in merged["agents"]["team-a/bot"]["allow"], "the host stays reachable, keyless"


def test_the_gateway_mounts_only_granted_secrets(tmp_path: Path) -> None:
    configmaps = _configmaps(tmp_path, "team-a", "team-b-key")
    allowed, _ = granted_configmaps(configmaps, {"team-b-key": _secret("team-b-key", "team-b")})
    injections = json.loads(merged_egress_config(allowed)["data"]["config.json"])["injections"]
    volume = gateway_secrets(injections)["spec"]["template"]["spec"]["volumes"][0]
    assert volume["projected"]["sources"] == []
    allowed, _ = granted_configmaps(configmaps, {"team-b-key": _secret("team-b-key", "team-a,team-b")})
    injections = json.loads(merged_egress_config(allowed)["data"]["config.json"])["injections"]
    volume = gateway_secrets(injections)["spec"]["template"]["spec"]["volumes"][0]
    assert [s["secret"]["name"] for s in volume["projected"]["sources"]] == ["team-b-key"]


def _caller(name: str, secret: str | None, **meta: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"agents": ["*"]}
    if secret is None:
        spec["keySha256"] = "0" * 64
    else:
        spec["keySecretRef"] = {"name": secret, "key": "k"}
    return {
        "apiVersion": "clrk.dev/v1alpha1",
        "kind": "Caller",
        "metadata": {"name": name, "namespace": "team", **meta},
        "spec": spec,
    }


def test_the_ingress_role_names_exactly_the_callers_secrets() -> None:
    callers = [
        _caller("a", "ops-keys"),
        _caller("b", "ci-keys"),
        _caller("c", "ops-keys"),
        _caller("d", None),
        _caller("gone", "old-keys", deletionTimestamp="2026-01-01T00:00:00Z"),
        {**_caller("bad", "bad-keys"), "spec": {"keySecretRef": {"name": "bad-keys", "key": "k"}}},
    ]
    names = caller_secret_names(callers)
    assert names == ["ci-keys", "ops-keys"], "neither a Caller being deleted nor one that does not validate"
    role, binding = caller_access_objects("team", names)
    assert role["metadata"] == binding["metadata"]
    assert role["metadata"]["namespace"] == "team" and role["metadata"]["name"] == "clrk-ingress-callers"
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["ci-keys", "ops-keys"], "verbs": ["get"]}
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "clrk-ingress", "namespace": "clrk"}]


def test_no_secret_named_means_no_role_rather_than_every_secret() -> None:
    # A rule with an empty resourceNames would grant every Secret of the namespace.
    assert caller_access_objects("team", caller_secret_names([_caller("d", None)])) == []


def test_the_ingress_holds_no_right_on_secrets_cluster_wide() -> None:
    roles = {o["metadata"]["name"]: o for o in install_objects() if o["kind"] == "ClusterRole"}
    bound = {
        b["roleRef"]["name"]
        for b in install_objects()
        if b["kind"] == "ClusterRoleBinding" and any(s["name"] == "clrk-ingress" for s in b["subjects"])
    }
    assert bound == {"clrk-ingress"}
    for rule in roles["clrk-ingress"]["rules"]:
        assert "secrets" not in rule["resources"] and "*" not in rule["resources"], rule


def test_render_shows_the_ingress_role_of_each_callers_namespace(tmp_path: Path) -> None:
    (tmp_path / "callers.yaml").write_text(
        "\n---\n".join(json.dumps(c) for c in (_caller("a", "ops-keys"), _caller("d", None)))
    )
    out = subprocess.run(
        [sys.executable, "-m", "clrk", "render", "-f", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "kind: Role\n" in out.stdout and "kind: RoleBinding\n" in out.stdout
    assert "resourceNames:\n  - ops-keys\n" in out.stdout


def test_an_injection_for_another_namespaces_agents_is_left_out(tmp_path: Path) -> None:
    (configmap,) = [c for c in _configmaps(tmp_path, "team-a", "a-key") if c["metadata"]["name"].startswith("policy.")]
    config = json.loads(configmap["data"]["config.json"])
    config["injections"][0]["agents"] = ["team-a/bot", "team-b/bot"]
    forged = {**configmap, "data": {"config.json": json.dumps(config)}}
    allowed, refused = granted_configmaps([forged], {"a-key": _secret("a-key", "team-a")})
    assert json.loads(allowed[0]["data"]["config.json"])["injections"] == []
    assert refused and "team-b/bot" in refused[0]
