from __future__ import annotations

import logging

import pytest

from clrk.cluster.routing import routing_table
from clrk.egress.config import SecretRef
from clrk.egress.secrets import StaticSecrets
from clrk.ingress import key_digest


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
