"""Each invocation's token totals in Redis, where the ingress reads an async run's usage: the
gateway adds every model call it saw (streamed and not), replicas add up, and a Redis that is
away costs the report, never the call. A real ``redis-server``; the gateway's real addon chain."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clrk.api.egress import EgressConfig
from clrk.egress.gateway import EgressGateway
from clrk.egress.messages import ModelRequest, ModelUsage
from clrk.egress.redis_usage import FIELDS, RedisUsage
from clrk.egress.secrets import StaticSecrets
from clrk.egress.usage import ModelCall
from tests.support.egress import TOKEN_KEY, Egress, GatewayCA, build_gateway, make_config
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.redis_server import have_redis_server, redis_server
from tests.support.tlsca import TestCA

pytestmark = pytest.mark.skipif(not have_redis_server(), reason="redis-server is not installed")

MESSAGES = "https://api.anthropic.com/v1/messages"


@pytest.fixture
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
def egress_config() -> EgressConfig:
    return make_config()


def _call(invocation_id: str, tokens: tuple[int, int, int, int]) -> ModelCall:
    inputs, outputs, created, read = tokens
    usage = ModelUsage(
        input_tokens=inputs, output_tokens=outputs, cache_creation_input_tokens=created, cache_read_input_tokens=read
    )
    return ModelCall(invocation_id, "team/bot", "api.anthropic.com", ModelRequest(), time.time(), usage=usage)


async def test_calls_add_up_across_replicas_and_expire(redis_url: str) -> None:
    first, second = RedisUsage(redis_url, ttl_s=60), RedisUsage(redis_url, ttl_s=60)
    try:
        assert await first.totals("inv-1") is None, "no call seen: no usage, not zeros"
        await first.add(_call("inv-1", (10, 20, 3, 4)))
        await second.add(_call("inv-1", (1, 2, 0, 5)))
        await second.add(_call("inv-2", (7, 7, 7, 7)))
        assert await second.totals("inv-1") == {
            "inputTokens": 11,
            "outputTokens": 22,
            "cacheCreationInputTokens": 3,
            "cacheReadInputTokens": 9,
            "modelCalls": 2,
        }
        ttl = await first._redis.pttl(first.key("inv-1"))
        assert 0 < ttl <= 60_000, "kept for the retention past its last call, then gone"
        assert set(await first.totals("inv-2") or {}) == set(FIELDS)
    finally:
        await first.close()
        await second.close()


async def test_a_redis_that_is_away_costs_the_report_not_the_call(caplog: pytest.LogCaptureFixture) -> None:
    with redis_server() as url:
        pass  # stopped: nothing answers there now
    usage = RedisUsage(url)
    usage.record(_call("inv-9", (1, 1, 0, 0)))  # a listener: returns at once, never raises
    await usage.close()  # waits for the write it handed to a task
    assert "inv-9: token usage not written to Redis" in caplog.text


@pytest.fixture
async def redis_egress(
    tmp_path: Path,
    fake_anthropic: FakeAnthropic,
    test_ca: TestCA,
    gateway_ca: GatewayCA,
    real_key: str,
    redis_url: str,
    egress_config: EgressConfig,
) -> AsyncIterator[Egress]:
    state = tmp_path / "state"
    plain = build_gateway(state, fake_anthropic, test_ca, real_key, egress_config, InMemorySpanExporter(), gateway_ca)
    settings = plain.settings.model_copy(update={"egress_redis_url": redis_url})
    gateway = EgressGateway(
        settings, egress_config, StaticSecrets({("anthropic", "api-key"): real_key}), token_key=TOKEN_KEY
    )
    await gateway.start()
    try:
        yield Egress(gateway, fake_anthropic, InMemorySpanExporter(), state, real_key)
    finally:
        await gateway.stop()


async def test_the_gateway_writes_each_invocations_totals(redis_egress: Egress, redis_url: str) -> None:
    redis_egress.fake.behaviour.input_tokens = 120
    body = {"model": "claude-test", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    async with redis_egress.client(redis_egress.proxy_url("inv-a")) as client:
        for stream in (False, True):
            answer = await client.post(MESSAGES, json={**body, "stream": stream})
            assert answer.status_code == 200, answer.text
    seen = redis_egress.gateway.usage.totals("inv-a")
    reader = RedisUsage(redis_url)
    try:
        expected = {
            "inputTokens": seen.input_tokens,
            "outputTokens": seen.output_tokens,
            "cacheCreationInputTokens": seen.cache_creation_input_tokens,
            "cacheReadInputTokens": seen.cache_read_input_tokens,
            "modelCalls": 2,
        }
        assert seen.input_tokens == 240
        async with asyncio.timeout(10):  # the write follows the call's end on the gateway's loop
            while await reader.totals("inv-a") != expected:
                await asyncio.sleep(0.02)
        assert await reader.totals("inv-b") is None
    finally:
        await reader.close()
