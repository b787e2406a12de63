"""Budgets: 429 like Anthropic's rate_limit_error before the upstream; no overshoot; restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clrk.api.egress import EgressConfig
from tests.support.egress import Egress, GatewayCA, build_gateway, make_config
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.tlsca import TestCA

MESSAGES = "https://api.anthropic.com/v1/messages?beta=true"
BODY = {"model": "claude-test", "max_tokens": 100, "stream": True, "messages": []}
# Each call reserves 100 + ~20 (body/4) and settles to the fake's 11 + 7 = 18 tokens.


@pytest.fixture
def egress_config() -> EgressConfig:
    return make_config(budget_tokens=400)


async def test_budget_stops_a_loop_with_a_429(egress: Egress) -> None:
    statuses = []
    async with egress.client() as client:
        for _ in range(40):
            r = await client.post(MESSAGES, json=BODY)
            statuses.append(r.status_code)
            if r.status_code == 429:
                break
    assert statuses[-1] == 429, statuses
    error = r.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "rate_limit_error"
    assert int(r.headers["retry-after"]) >= 1
    calls_that_passed = statuses.count(200)
    assert len(egress.fake.messages_requests()) == calls_that_passed
    spent = sum(c.usage.total_tokens for c in egress.gateway.usage.calls("inv-1"))
    assert spent <= 400
    # settled usage (18 per call) let more calls through than the estimates alone would
    assert calls_that_passed > 400 // 125
    refused = egress.spans.get_finished_spans()[-1]
    assert (refused.attributes or {})["http.response.status_code"] == 429
    assert (refused.attributes or {})["error.type"] == "rate_limit_error"


async def test_concurrent_calls_do_not_overshoot(egress: Egress) -> None:
    egress.fake.behaviour.chunk_delay = 0.05  # keep them in flight together

    async def one(i: int) -> int:
        async with egress.client(egress.proxy_url(f"inv-c{i}")) as client:
            r = await client.post(MESSAGES, json=BODY)
            return r.status_code

    statuses = await asyncio.gather(*(one(i) for i in range(12)))
    # 400 tokens fit three reservations of ~125 at once; the rest must be refused.
    assert statuses.count(200) == 3, statuses
    assert statuses.count(429) == 9
    assert len(egress.fake.messages_requests()) == 3


async def test_counters_survive_a_restart(
    tmp_path: Path, fake_anthropic: FakeAnthropic, test_ca: TestCA, gateway_ca: GatewayCA, real_key: str
) -> None:
    config = make_config(budget_tokens=400)
    state = tmp_path / "state"
    first = build_gateway(state, fake_anthropic, test_ca, real_key, config, InMemorySpanExporter(), gateway_ca)
    await first.start()
    egress = Egress(first, fake_anthropic, InMemorySpanExporter(), state, real_key)
    try:
        async with egress.client() as client:
            assert (await client.post(MESSAGES, json={**BODY, "max_tokens": 300})).status_code == 200
            # 300 + estimate reserved, settled to 18: now spend more with a non-stream JSON call
            fake_anthropic.behaviour.output_tokens = 350
            assert (await client.post(MESSAGES, json=BODY)).status_code == 200
    finally:
        await first.stop()
    second = build_gateway(state, fake_anthropic, test_ca, real_key, config, InMemorySpanExporter(), gateway_ca)
    await second.start()
    egress = Egress(second, fake_anthropic, InMemorySpanExporter(), state, real_key)
    try:
        async with egress.client() as client:
            r = await client.post(MESSAGES, json=BODY)
        assert r.status_code == 429
        assert r.json()["error"]["type"] == "rate_limit_error"
    finally:
        await second.stop()
    assert (state / "egress" / "budgets.sqlite3").stat().st_mode & 0o077 == 0
