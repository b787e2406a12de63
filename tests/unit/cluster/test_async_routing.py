"""The cluster ingress's async side as composed from its settings: the agent's default callback
routed, Redis's password joined to the URL in memory only, usage read back as the status shows it,
and no async routes at all without a broker and a Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from clrk.cluster.async_runs import cluster_runs, usage_of, with_password
from clrk.cluster.routing import routing_table
from clrk.ingress import HttpForwarder, IngressSettings, Usage


def _agent(**spec: object) -> dict[str, object]:
    return {
        "apiVersion": "clrk.dev/v1alpha1",
        "kind": "TaskAgent",
        "metadata": {"name": "bot", "namespace": "team"},
        "spec": {"template": {"spec": {"image": "x:1", "command": ["cat"]}}, **spec},
    }


def test_an_agents_callback_url_is_routed_with_it() -> None:
    targets, _ = routing_table([_agent(callback={"url": "https://hooks.example/done"}, timeout="30m")], [], None)
    target = targets["team/bot"]
    assert (target.callback_url, target.timeout) == ("https://hooks.example/done", 1800.0)
    plain, _ = routing_table([_agent()], [], None)
    assert plain["team/bot"].callback_url is None


def test_the_password_joins_the_url_as_its_userinfo() -> None:
    url = "redis://clrk-redis.clrk-system.svc.cluster.local:6379/0"
    assert with_password(url, "ab12") == "redis://:ab12@clrk-redis.clrk-system.svc.cluster.local:6379/0"
    assert with_password(url, "a/b@c") == "redis://:a%2Fb%40c@clrk-redis.clrk-system.svc.cluster.local:6379/0"
    assert with_password("redis://:old@h:1/0", "new") == "redis://:new@h:1/0"
    assert with_password(url, None) == url


def test_usage_reads_as_the_status_document_shows_it() -> None:
    totals = {
        "inputTokens": 1,
        "outputTokens": 2,
        "cacheCreationInputTokens": 3,
        "cacheReadInputTokens": 4,
        "modelCalls": 5,
    }
    usage = usage_of(totals)
    assert usage == Usage(1, 2, 3, 4, 5) and usage.document() == totals
    assert usage_of(None) is None


async def test_async_is_off_without_a_broker_or_redis_and_needs_the_platform_key(tmp_path: Path) -> None:
    forwarder = HttpForwarder({}, "cluster.local")
    try:
        assert await cluster_runs(IngressSettings(), forwarder, b"key") is None
        assert await cluster_runs(IngressSettings(broker_url="http://b/clrk/x"), forwarder, b"key") is None
        both = IngressSettings(broker_url="http://b/clrk/x", redis_url="redis://r:6379/0")
        with pytest.raises(ValueError, match="platform key"):
            await cluster_runs(both, forwarder, None)
        empty = tmp_path / "password"
        empty.write_text("\n")
        with pytest.raises(ValueError, match="CLRK_INGRESS_REDIS_PASSWORD_FILE"):
            await cluster_runs(both.model_copy(update={"redis_password_file": empty}), forwarder, b"key")
    finally:
        await forwarder.aclose()
