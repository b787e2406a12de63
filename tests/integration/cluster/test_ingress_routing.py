"""`clrk ingress` in a cluster: its tables come from the API server's TaskAgents and Callers, and a
Caller's keySecretRef from its Secret, read with the ingress's own RBAC (its ServiceAccount
impersonated: the ClusterRole `clrk install` applies and the Role `clrk apply` writes beside the
Callers are what is tested)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from clrk.cluster import Cluster, connect
from clrk.cluster.routing import refresh
from clrk.errors import ClusterError
from clrk.ingress import CallerKeys, HttpForwarder, IngressSettings, create_app, key_digest
from tests.support.kube import Kube, write_agent

INGRESS_USER = "system:serviceaccount:clrk:clrk-ingress"


def as_ingress(kube: Kube) -> Cluster:
    cluster = connect(kube.kubeconfig)
    cluster.api.set_default_header("Impersonate-User", INGRESS_USER)
    return cluster


async def test_routes_and_keys_follow_the_cluster(kube: Kube, namespace: str, tmp_path: Path) -> None:
    kube.clrk("apply", "-f", str(write_agent(tmp_path / "m", namespace, name="bot")))
    kube.apply_raw(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "callers", "namespace": namespace},
            "data": {"ops": base64.b64encode(b"secret-ops-key").decode()},
        },
        manager="test",
    )
    # Through `clrk apply`, which lets the ingress read the Secret the second one names.
    for name, spec in {
        "by-digest": {"keySha256": key_digest("digest-key"), "agents": ["bot"]},
        "by-secret": {"keySecretRef": {"name": "callers", "key": "ops"}, "agents": ["*"]},
    }.items():
        body = {"apiVersion": "clrk.dev/v1alpha1", "kind": "Caller", "metadata": {"name": name, "namespace": namespace}}
        (tmp_path / "m" / f"{name}.yaml").write_text(json.dumps({**body, "spec": spec}))
    kube.clrk("apply", "-f", str(tmp_path / "m"))
    ingress = as_ingress(kube)
    forwarder = HttpForwarder({}, "cluster.local")
    callers = CallerKeys()
    refresh(ingress, forwarder, callers)

    ref = f"{namespace}/bot"
    assert forwarder.targets()[ref].timeout == 100
    assert forwarder.url(forwarder.targets()[ref]) == f"http://bot.{namespace}.svc.cluster.local/"
    assert {key.name for key in callers.keys} >= {f"{namespace}/by-digest", f"{namespace}/by-secret"}

    app = create_app(forwarder, callers, IngressSettings(host="0.0.0.0"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
        anonymous = await client.post("/", json={}, headers={"X-Clrk-TaskAgent": ref})
        assert anonymous.status_code == 401, "off loopback the ingress requires a key"
        # No Knative here: the Service's address does not resolve, and the caller is told so.
        for key in ("digest-key", "secret-ops-key"):
            headers = {"X-Clrk-TaskAgent": ref, "Authorization": f"Bearer {key}"}
            unreachable = await client.post("/", json={}, headers=headers)
            assert unreachable.status_code == 503, unreachable.text
            assert unreachable.headers["retry-after"]
        unknown = await client.post(
            "/", json={}, headers={"X-Clrk-TaskAgent": f"{namespace}/gone", "Authorization": "Bearer digest-key"}
        )
        # The key may call only its own agents: whether another exists is not its business.
        assert (unknown.status_code, unknown.json()["error"]["type"]) == (403, "forbidden"), unknown.text
    await forwarder.aclose()

    kube.clrk("delete", "-f", str(tmp_path / "m"))
    refresh(ingress, forwarder, callers)
    assert ref not in forwarder.targets(), "a deleted agent stops being routed"


def test_the_ingress_may_get_a_secret_but_not_list_them(kube: Kube, namespace: str) -> None:
    secrets = as_ingress(kube).resource("v1", "Secret")
    with pytest.raises(ClusterError, match="not allowed"), as_ingress(kube).calling("list Secrets"):
        secrets.get(namespace=namespace)
    with pytest.raises(ClusterError, match="not allowed"), as_ingress(kube).calling("watch Secrets"):
        secrets.get(namespace=namespace, watch=True, timeout_seconds=1)
