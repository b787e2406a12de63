"""Tenancy in a cluster, as the compiled and rendered objects say it: agents published inside the
cluster only, reachable only from what carries the ingress's requests, each namespace holding
keys that are its own (never the platform key), and what `clrk render` shows of it."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clrk.api import TaskAgent
from clrk.cluster.configs import agent_namespace_objects
from clrk.manifests.compiling import knative_service
from clrk.manifests.documents import load_all
from clrk.manifests.options import ClusterOptions, PlatformSettings
from clrk.manifests.tenancy import (
    AGENT_KEYS_DIR,
    AUTOSCALER_METRICS_PORT,
    QUEUE_PROXY_PORT,
    agent_ingress_policy,
    agent_keys_secret,
)
from clrk_runtime.protocol.keys import namespace_key

PLATFORM_KEY = b"0f" * 32
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "jq-bot" / "manifests"


def _agent(namespace: str = "team-a") -> TaskAgent:
    return TaskAgent.model_validate(
        {
            "apiVersion": "clrk.dev/v1alpha1",
            "kind": "TaskAgent",
            "metadata": {"name": "bot", "namespace": namespace},
            "spec": {"template": {"spec": {"image": "reg.corp/bot:1", "command": ["/bot"]}}},
        }
    )


def test_agents_are_published_inside_the_cluster_only() -> None:
    ksvc = knative_service(_agent(), ["/bot"], ClusterOptions())
    # Knative's route reconciler reads the label from the Service's own labels (copied to its
    # Route), not from the revision template's.
    assert ksvc["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
    assert "networking.knative.dev/visibility" not in ksvc["spec"]["template"]["metadata"]["labels"]


def _decoded(secret: dict[str, Any]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in secret["data"].items()}


def test_each_namespace_holds_its_own_keys_never_the_platform_key() -> None:
    options = ClusterOptions()
    a = _decoded(agent_keys_secret("a", PLATFORM_KEY, options))
    b = _decoded(agent_keys_secret("b", PLATFORM_KEY, options))
    assert a == {
        "proxy-token": namespace_key(PLATFORM_KEY, "proxy-token", "a"),
        "request": namespace_key(PLATFORM_KEY, "request", "a"),
    }
    assert PLATFORM_KEY not in a.values() and PLATFORM_KEY.decode() not in str(a)
    assert a["proxy-token"] != a["request"], "one key per purpose"
    assert not set(a.values()) & set(b.values()), "namespace b's keys are not a's"


def test_agent_pods_mount_their_namespaces_keys_for_root_only() -> None:
    pod = knative_service(_agent(), ["/bot"], ClusterOptions())["spec"]["template"]["spec"]
    (keys,) = [v for v in pod["volumes"] if "secret" in v]
    assert keys["secret"] == {"secretName": "clrk-agent-keys", "defaultMode": 0o400}
    (agent,) = pod["containers"]
    (mount,) = [m for m in agent["volumeMounts"] if m["name"] == keys["name"]]
    assert mount == {"name": keys["name"], "mountPath": AGENT_KEYS_DIR, "readOnly": True}
    env = {e["name"]: e["value"] for e in agent["env"]}
    assert env["CLRK_EGRESS_TOKEN_KEY_FILE"] == f"{AGENT_KEYS_DIR}/proxy-token"
    assert env["CLRK_REQUEST_KEY_FILE"] == f"{AGENT_KEYS_DIR}/request"
    assert agent["securityContext"]["runAsUser"] == 0, "the shim reads them as root; sandboxes run as other uids"
    assert "fsGroup" not in pod["securityContext"] or pod["securityContext"]["fsGroup"] != 0


def _peers(policy: dict[str, Any], port: int) -> list[dict[str, Any]]:
    rules = [r for r in policy["spec"]["ingress"] if [p["port"] for p in r["ports"]] == [port]]
    assert len(rules) == 1
    peers: list[dict[str, Any]] = rules[0]["from"]
    return peers


def _ns(name: str) -> dict[str, Any]:
    return {"matchLabels": {"kubernetes.io/metadata.name": name}}


def test_only_the_ingress_path_may_connect_to_agent_pods() -> None:
    policy = agent_ingress_policy("team-a", ClusterOptions())
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"] and policy["metadata"]["namespace"] == "team-a"
    assert spec["podSelector"] == {"matchExpressions": [{"key": "clrk.dev/agent", "operator": "Exists"}]}
    assert {p["port"] for r in spec["ingress"] for p in r["ports"]} == {QUEUE_PROXY_PORT, AUTOSCALER_METRICS_PORT}
    assert all(r.get("from") for r in spec["ingress"]), "no rule admits every source"
    assert _peers(policy, QUEUE_PROXY_PORT) == [
        {"namespaceSelector": _ns("clrk"), "podSelector": {"matchLabels": {"app.kubernetes.io/name": "clrk-ingress"}}},
        {"namespaceSelector": _ns("knative-serving"), "podSelector": {"matchLabels": {"app": "activator"}}},
        {"namespaceSelector": _ns("kourier-system")},
    ]
    assert _peers(policy, AUTOSCALER_METRICS_PORT) == [
        {"namespaceSelector": _ns("knative-serving"), "podSelector": {"matchLabels": {"app": "autoscaler"}}}
    ]
    # No peer selects pods of an agent namespace: another agent's pod cannot connect.
    for rule in spec["ingress"]:
        for peer in rule["from"]:
            assert peer["namespaceSelector"] != _ns("team-a") and peer["namespaceSelector"] != {}


def test_the_knative_namespaces_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLRK_KNATIVE_GATEWAY_NAMESPACE", "istio-system")
    options = PlatformSettings().options({"knative_namespace": "serving-x"})
    policy = agent_ingress_policy("team-a", options)
    namespaces = {str(p["namespaceSelector"]) for p in _peers(policy, QUEUE_PROXY_PORT)}
    assert str(_ns("istio-system")) in namespaces and str(_ns("serving-x")) in namespaces
    assert options.recorded()["knativeGatewayNamespace"] == "istio-system"
    with pytest.raises(ValueError, match="knative_namespace"):
        PlatformSettings(knative_namespace="Not A Namespace")


def test_every_agent_namespace_gets_both_fences() -> None:
    kinds = [(o["kind"], o["metadata"]["name"]) for o in agent_namespace_objects("team-a")]
    assert kinds == [("NetworkPolicy", "clrk-agents"), ("NetworkPolicy", "clrk-agents-ingress")]


def test_render_shows_the_label_the_fences_and_the_keys_secret_without_a_key() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "clrk", "render", "-f", str(EXAMPLE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    objects = {(o["kind"], o["metadata"]["name"]): o for o in load_all(result.stdout)}
    assert objects[("Service", "jq-bot")]["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
    assert ("NetworkPolicy", "clrk-agents-ingress") in objects and ("NetworkPolicy", "clrk-agents") in objects
    secret = objects[("Secret", "clrk-agent-keys")]
    assert "data" not in secret and "stringData" not in secret, "no cluster read: nothing to derive from"
    assert secret["metadata"]["annotations"]["clrk.dev/derived-from"] == "clrk-system/clrk-platform-key"


def test_each_namespace_gets_the_secret_its_callbacks_verify_with_and_no_agent_key() -> None:
    """The ingress signs a namespace's callbacks with its ``callback`` key (clrk.cluster.async_runs);
    the namespace's Secret for receivers verifies them, another namespace's does not, and it holds
    neither the platform key nor the keys that sign requests or proxy tokens."""
    from datetime import UTC, datetime

    from standardwebhooks import Webhook, WebhookVerificationError

    from clrk.ingress.callbacks import callback_secret as ingress_secret
    from clrk.manifests.tenancy import callback_secret

    options = ClusterOptions()
    a, b = (_decoded(callback_secret(ns, PLATFORM_KEY, options)) for ns in ("a", "b"))
    assert set(a) == {"secret"} and a["secret"].startswith(b"whsec_")
    sent = datetime.now(UTC)
    signature = Webhook(ingress_secret(namespace_key(PLATFORM_KEY, "callback", "a"))).sign("01-id", sent, "{}")
    headers = {"webhook-id": "01-id", "webhook-timestamp": str(int(sent.timestamp())), "webhook-signature": signature}
    Webhook(a["secret"].decode()).verify("{}", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(b["secret"].decode()).verify("{}", headers)
    keys = _decoded(agent_keys_secret("a", PLATFORM_KEY, options))
    assert not any(key in a["secret"] for key in (PLATFORM_KEY, *keys.values()))
    assert callback_secret("a", None, options).get("data") is None, "clrk render reads no key"
