"""Injection, streaming without buffering, accounting and spans for Messages calls."""

from __future__ import annotations

import asyncio
import json
import time

from opentelemetry.trace import SpanKind, StatusCode

from tests.support.egress import AGENT, TRACEPARENT, Egress

MESSAGES = "https://api.anthropic.com/v1/messages?beta=true"


def body(stream: bool = True, max_tokens: int = 64) -> dict[str, object]:
    return {
        "model": "claude-test-1",
        "max_tokens": max_tokens,
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
    }


async def test_injection_replaces_agent_credentials(egress: Egress) -> None:
    async with egress.client() as client:
        r = await client.post(
            MESSAGES,
            json=body(stream=False),
            headers={"x-api-key": "placeholder", "authorization": "Bearer agent-token"},
        )
    assert r.status_code == 200
    seen = egress.fake.messages_requests()[-1]
    assert seen.headers["x-api-key"] == egress.real_key
    assert "authorization" not in seen.headers
    assert "proxy-authorization" not in seen.headers
    assert "placeholder" not in json.dumps(seen.headers)


async def test_sse_chunks_arrive_before_the_stream_ends(egress: Egress) -> None:
    egress.fake.behaviour.chunk_delay = 0.15
    arrivals: list[float] = []
    async with egress.client() as client:
        started = time.monotonic()
        async with client.stream("POST", MESSAGES, json=body()) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            async for chunk in r.aiter_raw():
                arrivals.append(time.monotonic() - started)
                assert chunk
    total = arrivals[-1]
    # ≥ 8 events paced 150 ms apart: the first must come long before the last.
    assert total > 1.0
    assert arrivals[0] < 0.5, arrivals
    assert len(arrivals) >= 5


async def test_accounting_keeps_the_last_cumulative_usage(egress: Egress) -> None:
    b = egress.fake.behaviour
    b.input_tokens, b.output_tokens = 20, 30
    b.cache_read_input_tokens, b.cache_creation_input_tokens = 100, 7
    b.message_deltas = 3  # output_tokens 10, 20, 30: cumulative, the last one counts
    async with egress.client() as client:
        r = await client.post(MESSAGES, json=body())
        assert r.status_code == 200
        assert "message_stop" in r.text
        r2 = await client.post(MESSAGES, json=body(stream=False))
        assert r2.status_code == 200
    calls = egress.gateway.usage.calls("inv-1")
    assert len(calls) == 2
    for call in calls:
        u = call.usage
        assert (u.input_tokens, u.output_tokens) == (20, 30)
        assert (u.cache_read_input_tokens, u.cache_creation_input_tokens) == (100, 7)
        assert u.model == "claude-test-1"
        assert u.stop_reason == "end_turn"
        assert call.status == 200
        assert call.agent == AGENT
    assert egress.gateway.usage.totals("inv-1").output_tokens == 60


async def test_span_per_model_call(egress: Egress) -> None:
    b = egress.fake.behaviour
    b.cache_read_input_tokens = 5
    async with egress.client() as client:
        await client.post(MESSAGES, json=body(), headers={"x-api-key": "placeholder"})
    (span,) = egress.spans.get_finished_spans()
    assert span.name == "chat claude-test-1"
    assert span.kind is SpanKind.CLIENT
    assert span.parent is not None
    assert format(span.context.trace_id, "032x") == TRACEPARENT.split("-")[1]
    assert format(span.parent.span_id, "016x") == TRACEPARENT.split("-")[2]
    a = dict(span.attributes or {})
    assert a["gen_ai.system"] == a["gen_ai.provider.name"] == "anthropic"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == "claude-test-1"
    assert str(a["gen_ai.response.id"]).startswith("msg_fake")
    assert a["gen_ai.usage.input_tokens"] == b.input_tokens + 5
    assert a["gen_ai.usage.output_tokens"] == b.output_tokens
    assert a["gen_ai.usage.cache_read_input_tokens"] == 5
    assert a["gen_ai.usage.cache_creation_input_tokens"] == 0
    assert tuple(a["gen_ai.response.finish_reasons"]) == ("end_turn",)  # type: ignore[arg-type]
    assert a["http.response.status_code"] == 200
    assert a["server.address"] == "api.anthropic.com"
    assert a["clrk.invocation.id"] == "inv-1"
    assert a["clrk.agent"] == AGENT
    assert tuple(a["http.request.header.x-api-key"]) == ("[redacted]",)  # type: ignore[arg-type]


async def test_error_event_after_200(egress: Egress) -> None:
    egress.fake.behaviour.error_after_200 = True
    async with egress.client() as client:
        r = await client.post(MESSAGES, json=body())
    assert r.status_code == 200
    assert "overloaded_error" in r.text
    (call,) = egress.gateway.usage.calls("inv-1")
    assert call.usage.error_type == "overloaded_error"
    assert call.usage.input_tokens == egress.fake.behaviour.input_tokens
    (span,) = egress.spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "overloaded_error"


async def test_upstream_error_statuses_pass_through(egress: Egress) -> None:
    for status in (401, 429, 529):
        egress.fake.behaviour.status = status
        async with egress.client() as client:
            r = await client.post(MESSAGES, json=body())
        assert r.status_code == status
    calls = egress.gateway.usage.calls("inv-1")
    assert [c.status for c in calls] == [401, 429, 529]
    assert calls[0].usage.error_type == "authentication_error"


async def test_reset_mid_stream_is_recorded(egress: Egress) -> None:
    egress.fake.behaviour.reset_after_events = 3
    async with egress.client() as client:
        try:
            r = await client.post(MESSAGES, json=body())
            text = r.text
        except Exception as exc:  # the client may see a truncated body or a protocol error
            text = repr(exc)
    assert "message_stop" not in text
    for _ in range(50):
        if egress.gateway.usage.calls("inv-1"):
            break
        await asyncio.sleep(0.02)
    (call,) = egress.gateway.usage.calls("inv-1")
    assert not call.usage.complete
    assert call.usage.input_tokens == egress.fake.behaviour.input_tokens
    (span,) = egress.spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR


async def test_other_paths_are_not_model_calls(egress: Egress) -> None:
    async with egress.client() as client:
        r = await client.get("https://api.anthropic.com/v1/models")
    assert r.status_code == 404
    assert egress.fake.requests[-1].headers["x-api-key"] == egress.real_key
    assert egress.gateway.usage.calls("inv-1") == []
    assert egress.spans.get_finished_spans() == ()


async def test_missing_secret_is_a_403_naming_the_secret(egress: Egress) -> None:
    from clrk.api.egress import Injection, SecretRef

    config = egress.gateway.config
    injection = Injection(
        host="api.anthropic.com",
        header="x-api-key",
        secret=SecretRef(name="gone", key="api-key"),
        agents=(AGENT,),
    )
    egress.gateway.update_config(config.model_copy(update={"injections": (injection,)}))
    async with egress.client() as client:
        r = await client.post(MESSAGES, json=body(stream=False), headers={"x-api-key": "p"})
    assert r.status_code == 403
    assert "secret gone/api-key is not available" in r.json()["error"]["message"]
    assert egress.fake.requests == []
