"""`clrk ingress` in a cluster: its tables come from the API server's TaskAgents and Callers."""

from __future__ import annotations

from pathlib import Path

import httpx

from clrk.cluster.routing import refresh
from clrk.egress.secrets import DirectorySecrets
from clrk.ingress import CallerKeys, HttpForwarder, IngressSettings, create_app, key_digest
from tests.support.kube import Kube, write_agent


async def test_routes_and_keys_follow_the_cluster(kube: Kube, namespace: str, tmp_path: Path) -> None:
    kube.clrk("apply", "-f", str(write_agent(tmp_path / "m", namespace, name="bot")))
    for name, spec in {
        "by-digest": {"keySha256": key_digest("digest-key"), "agents": ["bot"]},
        "by-secret": {"keySecretRef": {"name": "callers", "key": "ops"}, "agents": ["*"]},
    }.items():
        kube.apply_raw(
            {
                "apiVersion": "clrk.dev/v1alpha1",
                "kind": "Caller",
                "metadata": {"name": name, "namespace": namespace},
                "spec": spec,
            },
            manager="test",
        )
    secrets = tmp_path / "secrets" / "callers"
    secrets.mkdir(parents=True)
    (secrets / "ops").write_text("secret-ops-key")
    forwarder = HttpForwarder({})
    callers = CallerKeys()
    refresh(kube.cluster, forwarder, callers, DirectorySecrets(tmp_path / "secrets"))

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
        assert unknown.status_code == 404

    kube.clrk("delete", "-f", str(tmp_path / "m"))
    refresh(kube.cluster, forwarder, callers, None)
    assert ref not in forwarder.targets(), "a deleted agent stops being routed"
