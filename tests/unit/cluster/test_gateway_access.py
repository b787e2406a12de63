"""The egress gateway holds the provider keys, so it gets nothing else: no Kubernetes API rights
and no service-account token; every file it reads is mounted into its pod, the provider keys
following the injections of its configuration; the platform key stays in the platform's
namespaces."""

from __future__ import annotations

from typing import Any

from clrk.cluster.configs import RESERVED_SECRETS, gateway_secrets, install_objects, platform_key_secret
from clrk.cluster.installing import RETIRED, ingress_key_copy
from clrk.manifests.options import ClusterOptions


def _objects(kind: str) -> list[dict[str, Any]]:
    return [o for o in install_objects() if o["kind"] == kind]


def _deployment(name: str) -> dict[str, Any]:
    (body,) = [o for o in _objects("Deployment") if o["metadata"]["name"] == name]
    return body


def test_no_role_binds_the_gateways_service_account() -> None:
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        for binding in _objects(kind):
            names = {s["name"] for s in binding["subjects"] if s["kind"] == "ServiceAccount"}
            assert "clrk-egress" not in names, binding["metadata"]["name"]
    roles = {o["metadata"]["name"] for o in _objects("ClusterRole") + _objects("Role")}
    assert "clrk-egress" not in roles
    assert ("rbac.authorization.k8s.io/v1", "ClusterRole", "", "clrk-egress") in RETIRED, "install removes the old one"


def test_the_gateways_pod_mounts_no_token() -> None:
    (account,) = [o for o in _objects("ServiceAccount") if o["metadata"]["name"] == "clrk-egress"]
    assert account["automountServiceAccountToken"] is False
    assert _deployment("clrk-egress")["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_every_file_the_gateway_reads_is_mounted() -> None:
    pod = _deployment("clrk-egress")["spec"]["template"]["spec"]
    (gateway,) = pod["containers"]
    mounts = [m["mountPath"] for m in gateway["volumeMounts"]]
    env = {e["name"]: e.get("value", "") for e in gateway["env"]}
    args = dict(a.removeprefix("--").split("=", 1) for a in gateway["args"])
    files = [args["config"], env["CLRK_EGRESS_TOKEN_KEY_FILE"], args["secrets-dir"] + "/x"]
    for path in files:
        assert any(path.startswith(m + "/") for m in mounts), path
    (key,) = [v for v in pod["volumes"] if v["name"] == "platform-key"]
    assert key["secret"]["secretName"] == "clrk-platform-key"
    assert env["CLRK_EGRESS_TOKEN_KEY_FILE"].endswith("/key"), "the Secret's key is `key`"
    (secrets,) = [v for v in pod["volumes"] if v["name"] == "secrets"]
    assert "sources" not in secrets["projected"], "set by apply and the operator, under a manager of their own"


def test_the_ingress_mounts_the_platform_key_from_its_own_namespace() -> None:
    ingress = _deployment("clrk-ingress")
    pod = ingress["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "platform-key"]
    assert volume["secret"]["secretName"] == "clrk-platform-key"
    assert pod["securityContext"]["fsGroup"] == 65532 and volume["secret"]["defaultMode"] == 0o440
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["CLRK_PLATFORM_KEY_FILE"] == "/var/run/clrk/platform-key/key"
    original = platform_key_secret()
    stored = {**original, "data": {"key": "b64"}}
    copy = ingress_key_copy(stored, ClusterOptions())
    assert copy["metadata"] == {**copy["metadata"], "name": "clrk-platform-key", "namespace": "clrk"}
    assert copy["data"] == {"key": "b64"} and original["metadata"]["namespace"] == "clrk-system"


def _injection(name: str, key: str) -> dict[str, Any]:
    return {"host": "api.example", "header": "x-api-key", "secret": {"name": name, "key": key}, "agents": []}


def test_the_gateway_mounts_exactly_the_secrets_its_injections_name() -> None:
    body = gateway_secrets(
        [_injection("anthropic-credentials", "api-key"), _injection("team-b", "token"), _injection("team-b", "alt")]
    )
    assert body["metadata"] == {"name": "clrk-egress", "namespace": "clrk-system"}
    (volume,) = body["spec"]["template"]["spec"]["volumes"]
    assert volume["name"] == "secrets"
    assert volume["projected"]["sources"] == [
        {
            "secret": {
                "name": "anthropic-credentials",
                "optional": True,
                "items": [{"key": "api-key", "path": "anthropic-credentials/api-key"}],
            }
        },
        {
            "secret": {
                "name": "team-b",
                "optional": True,
                "items": [{"key": "alt", "path": "team-b/alt"}, {"key": "token", "path": "team-b/token"}],
            }
        },
    ]
    assert gateway_secrets([])["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"] == []


def test_an_injection_naming_a_platform_secret_mounts_nothing() -> None:
    """A policy naming the CA key or the platform key would have the gateway send it upstream."""
    body = gateway_secrets([_injection(name, "key") for name in sorted(RESERVED_SECRETS)])
    assert body["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"] == []
    assert {"clrk-ca-key", "clrk-platform-key"} <= RESERVED_SECRETS
