from __future__ import annotations

import asyncio
import base64
import logging

import pytest
import uvicorn
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.resource import ResourceInstance

from clrk.cluster import Cluster, routing
from clrk.cluster.routing import routing_table, secret_reader
from clrk.ingress import AgentTarget, HttpForwarder, IngressSettings, key_digest


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
    asked: list[tuple[str, str, str]] = []

    def secrets(namespace: str, name: str, key: str) -> str | None:
        asked.append((namespace, name, key))
        return {("team", "s", "other"): "v"}.get((namespace, name, key))

    with caplog.at_level(logging.WARNING, logger="clrk.ingress"):
        targets, keys = routing_table(agents, callers, secrets)
    assert list(targets) == ["team/fast"]
    assert targets["team/fast"].timeout == 5
    assert [(k.name, sorted(k.agents)) for k in keys] == [("team/a", ["other/x", "team/fast"])]
    assert "TaskAgent team/broken left out" in caplog.text
    assert "Secret team/s has no key 'missing'" in caplog.text
    assert asked == [("team", "s", "missing")], "a keySecretRef is read from the Caller's own namespace"


def test_secret_based_callers_are_routed() -> None:
    caller = {
        "apiVersion": "clrk.dev/v1alpha1",
        "kind": "Caller",
        "metadata": {"name": "ops", "namespace": "team"},
        "spec": {"keySecretRef": {"name": "callers", "key": "ops"}, "agents": ["*"]},
    }
    _, keys = routing_table([], [caller], lambda namespace, name, key: "the-key" if namespace == "team" else None)
    assert [(k.name, k.digest) for k in keys] == [("team/ops", key_digest("the-key"))]


async def test_the_cluster_ingress_serves_with_the_platforms_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    """JSON refusals and the head deadline (``CLRK_INGRESS_HEAD_TIMEOUT_SECONDS``), as clrk dev's."""
    configs: list[uvicorn.Config] = []

    async def serve(self: uvicorn.Server, sockets: object = None) -> None:
        configs.append(self.config)

    monkeypatch.setattr(routing, "refresh", lambda *args: None)
    monkeypatch.setattr(uvicorn.Server, "serve", serve)
    monkeypatch.setenv("CLRK_INGRESS_HEAD_TIMEOUT_SECONDS", "3.5")
    await routing.serve_ingress(IngressSettings(), cluster=None, cluster_domain="cluster.local")  # type: ignore[arg-type]
    (config,) = configs
    assert isinstance(config.http, type) and issubclass(config.http, asyncio.Protocol)
    assert config.http.__module__ == "clrk_runtime.server.protocols"
    assert getattr(config.http, "head_timeout_seconds", None) == 3.5


class _FakeSecrets:
    """Answers Secret GETs as the API server would: a body, a 404 or a 403."""

    def __init__(self, secrets: dict[tuple[str, str], dict[str, str]], forbidden: set[str]) -> None:
        self.secrets, self.forbidden, self.reads = secrets, forbidden, 0

    def get(self, name: str, namespace: str) -> ResourceInstance:
        self.reads += 1
        if namespace in self.forbidden:
            raise ApiException(status=403, reason="Forbidden")
        data = self.secrets.get((namespace, name))
        if data is None:
            raise ApiException(status=404, reason="Not Found")
        return ResourceInstance(None, {"kind": "Secret", "data": data})  # type: ignore[no-untyped-call]


class _FakeCluster(Cluster):
    def __init__(self, secrets: _FakeSecrets) -> None:
        super().__init__(ApiClient(), "test")
        self.secrets = secrets

    def resource(self, api_version: str, kind: str) -> _FakeSecrets:
        return self.secrets


def test_secret_reader_decodes_and_reads_each_secret_once(caplog: pytest.LogCaptureFixture) -> None:
    encoded = base64.b64encode(b"the-key\n").decode()
    secrets = _FakeSecrets({("team", "callers"): {"ops": encoded, "bin": base64.b64encode(b"\xff").decode()}}, {"x"})
    read = secret_reader(_FakeCluster(secrets))
    assert read("team", "callers", "ops") == "the-key", "a trailing newline (kubectl --from-file) is not the key"
    assert read("team", "callers", "missing") is None
    assert secrets.reads == 1, "one GET per Secret per refresh"
    with caplog.at_level(logging.WARNING, logger="clrk.ingress"):
        assert read("team", "absent", "ops") is None
        assert read("x", "callers", "ops") is None
        assert read("team", "callers", "bin") is None
    assert "Secret team/absent does not exist" in caplog.text
    assert "Secret x/callers is not readable by the ingress: Role x/clrk-ingress-callers" in caplog.text
    assert "not UTF-8" in caplog.text


def test_the_forwarder_follows_the_cluster_domain() -> None:
    forwarder = HttpForwarder({}, "corp.internal")
    assert forwarder.url(AgentTarget("team/bot", 5.0)) == "http://bot.team.svc.corp.internal/"
