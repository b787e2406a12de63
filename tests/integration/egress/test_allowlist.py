"""Allow-list: 403 at once, with a JSON body naming host and agent, for anything not listed."""

from __future__ import annotations

import logging
import time

import httpx
import pytest

from tests.integration.egress.rawproxy import basic, connect, plain_get
from tests.support.egress import AGENT, Egress


@pytest.mark.parametrize(
    "target",
    ["example.com:443", "127.0.0.1:22", "10.0.0.1:443", "localhost:8080", "[::1]:443"],
)
async def test_connect_elsewhere_is_403_at_once(egress: Egress, target: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    started = time.monotonic()
    r = await connect(egress.port, target, basic("inv-1", egress.token()))
    assert time.monotonic() - started < 1.0
    assert r.status == 403
    error = r.json()["error"]
    assert error["type"] == "egress_denied"
    assert error["agent"] == AGENT
    assert target.rpartition(":")[0].strip("[]") in error["host"]
    assert any("egress 403" in rec.getMessage() for rec in caplog.records)


async def test_plain_http_elsewhere_is_403(egress: Egress) -> None:
    r = await plain_get(egress.port, "http://example.com/x", "example.com", basic("inv-1", egress.token()))
    assert r.status == 403
    assert r.json()["error"]["host"] == "example.com:80"


async def test_unknown_agent_is_403(egress: Egress) -> None:
    r = await connect(egress.port, "api.anthropic.com:443", basic("inv-1", egress.token(agent="ns/ghost")))
    assert r.status == 403
    assert "unknown agent" in r.json()["error"]["message"]


async def test_other_agent_cannot_reach_anthropic(egress: Egress) -> None:
    r = await connect(egress.port, "api.anthropic.com:443", basic("inv-1", egress.token(agent="default/other")))
    assert r.status == 403


async def test_host_must_match_connect_target(egress: Egress) -> None:
    async with egress.client() as client:
        r = await client.post(
            "https://api.anthropic.com/v1/messages",
            json={"model": "m", "max_tokens": 5},
            headers={"host": "example.org"},
        )
    assert r.status_code == 403
    assert "CONNECT target" in r.json()["error"]["message"]
    assert egress.fake.requests == []


async def test_httpx_sees_a_proxy_error_not_a_hang(egress: Egress) -> None:
    async with egress.client() as client:
        with pytest.raises(httpx.ProxyError, match="403"):
            await client.get("https://example.com/")


async def test_config_update_applies_to_new_connections(egress: Egress) -> None:
    from clrk.api.egress import AgentEgress, EgressConfig

    egress.gateway.update_config(EgressConfig(agents={AGENT: AgentEgress(allow=("example.com",))}))
    r = await connect(egress.port, "api.anthropic.com:443", basic("inv-1", egress.token()))
    assert r.status == 403
