from __future__ import annotations

import asyncio
import logging

import pytest
import uvicorn

from clrk.api.egress import SecretRef
from clrk.cluster import routing
from clrk.cluster.routing import routing_table
from clrk.egress.secrets import StaticSecrets
from clrk.ingress import IngressSettings, key_digest


def _agent(name: str, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "clrk.dev/v1alpha1",
        "kind": "TaskAgent",
        "metadata": {"name": name, "namespace": "team", "uid": "u", "resourceVersion": "1"},
        "spec": {"template": {"spec": {"image": "x:1", "command": ["cat"]}}, **spec},
        "status": {"observedGeneration": 1},
    }


def test_routing_table_from_cluster_objects(caplog: pytest.LogCaptureFixture) -> None:
    callers = [
        {
            "apiVersion": "clrk.dev/v1alpha1",
            "kind": "Caller",
            "metadata": {"name": "a", "namespace": "team"},
            "spec": {"keySha256": key_digest("k1"), "agents": ["fast", "other/x"]},
        },
        {
            "apiVersion": "clrk.dev/v1alpha1",
            "kind": "Caller",
            "metadata": {"name": "b", "namespace": "team"},
            "spec": {"keySecretRef": {"name": "s", "key": "missing"}, "agents": ["*"]},
        },
    ]
    agents = [_agent("fast", timeout="5s"), _agent("broken", timeout="forever")]
    secrets = StaticSecrets({("s", "other"): "v"})
    with caplog.at_level(logging.WARNING, logger="clrk.ingress"):
        targets, keys = routing_table(agents, callers, secrets)
    assert list(targets) == ["team/fast"]
    assert targets["team/fast"].timeout == 5
    assert [(k.name, sorted(k.agents)) for k in keys] == [("team/a", ["other/x", "team/fast"])]
    assert "TaskAgent team/broken left out" in caplog.text
    assert "secret s/missing is not mounted" in caplog.text
    assert secrets.get(SecretRef(name="s", key="other")) == "v"


async def test_the_cluster_ingress_serves_with_the_platforms_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    """JSON refusals and the head deadline (``CLRK_INGRESS_HEAD_TIMEOUT_SECONDS``), as clrk dev's."""
    configs: list[uvicorn.Config] = []

    async def serve(self: uvicorn.Server, sockets: object = None) -> None:
        configs.append(self.config)

    monkeypatch.setattr(routing, "refresh", lambda *args: None)
    monkeypatch.setattr(uvicorn.Server, "serve", serve)
    monkeypatch.setenv("CLRK_INGRESS_HEAD_TIMEOUT_SECONDS", "3.5")
    await routing.serve_ingress(IngressSettings(), cluster=None, secrets=None)  # type: ignore[arg-type]
    (config,) = configs
    assert isinstance(config.http, type) and issubclass(config.http, asyncio.Protocol)
    assert config.http.__module__ == "clrk_runtime.server.protocols"
    assert getattr(config.http, "head_timeout_seconds", None) == 3.5
