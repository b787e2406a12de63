"""Accounting addon, no sockets: tokens counted from JSON and SSE responses as they pass."""

from __future__ import annotations

import json

from mitmproxy.flow import Error

from clrk.egress.accounting import Accounting
from clrk.egress.usage import CALL, UsageStore
from tests.support.addons import (
    addon_context,
    identified,
    json_response,
    messages_flow,
    play,
    request_flow,
    sse_body,
    streamed_response,
)
from tests.support.egress import AGENT

USAGE = {"input_tokens": 11, "output_tokens": 0, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5}
SSE = sse_body(
    {"type": "message_start", "message": {"id": "msg_1", "model": "claude-test", "usage": USAGE}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}},
    {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 7}},  # cumulative: 7, not 10
    {"type": "message_stop"},
)
MESSAGE = {
    "type": "message",
    "id": "msg_2",
    "model": "claude-test",
    "stop_reason": "max_tokens",
    "usage": {"input_tokens": 20, "output_tokens": 30},
}


async def test_an_sse_response_is_counted_as_it_streams_and_passes_unchanged() -> None:
    store = UsageStore()
    async with addon_context(Accounting(store, clock=lambda: 5.0)) as tctx:
        flow = identified(messages_flow({"model": "claude-test", "max_tokens": 64, "stream": True}))
        await play(tctx, "request", flow)
        assert flow.request.headers["accept-encoding"] == "identity"  # so the tap reads plain bytes
        flow.response = streamed_response("text/event-stream")
        await play(tctx, "responseheaders", flow)
        stream = flow.response.stream
        assert callable(stream)
        passed = b"".join(stream(SSE[i : i + 7]) for i in range(0, len(SSE), 7))  # any slicing
        await play(tctx, "response", flow)
    assert passed == SSE
    [call] = store.calls("inv-1")
    assert (call.agent, call.host, call.status) == (AGENT, "api.anthropic.com", 200)
    assert call.request.max_tokens == 64 and call.request.stream
    assert call.usage.total_tokens == 11 + 100 + 5 + 7
    assert (call.usage.model, call.usage.stop_reason, call.usage.complete) == ("claude-test", "end_turn", True)
    assert call.duration_s == 0.0


async def test_a_json_response_is_counted_at_its_end() -> None:
    store = UsageStore()
    async with addon_context(Accounting(store)) as tctx:
        flow = identified(messages_flow())
        await play(tctx, "request", flow)
        flow.response = streamed_response("application/json")
        await play(tctx, "responseheaders", flow)
        stream = flow.response.stream
        assert callable(stream)
        stream(json.dumps(MESSAGE).encode())
        await play(tctx, "response", flow)
    assert store.totals("inv-1").input_tokens == 20
    assert store.totals("inv-1").output_tokens == 30
    assert store.calls("inv-1")[0].usage.stop_reason == "max_tokens"


async def test_the_gateways_own_answer_is_counted_too() -> None:
    store = UsageStore()
    async with addon_context(Accounting(store)) as tctx:
        flow = identified(messages_flow())
        await play(tctx, "request", flow)
        flow.response = json_response(429, {"type": "error", "error": {"type": "rate_limit_error", "message": "x"}})
        await play(tctx, "responseheaders", flow)
        await play(tctx, "response", flow)
    [call] = store.calls("inv-1")
    assert (call.status, call.error, call.usage.total_tokens) == (429, "rate_limit_error", 0)


async def test_a_transport_error_still_records_the_call() -> None:
    store = UsageStore()
    async with addon_context(Accounting(store)) as tctx:
        flow = identified(messages_flow())
        await play(tctx, "request", flow)
        flow.error = Error("connection reset")
        await play(tctx, "error", flow)
    assert store.calls("inv-1")[0].error == "connection reset"


async def test_only_identified_model_calls_are_counted() -> None:
    store = UsageStore()
    async with addon_context(Accounting(store)) as tctx:
        other = identified(request_flow("api.anthropic.com", method="POST", path="/v1/messages/count_tokens"))
        anonymous = messages_flow()
        for flow in (other, anonymous):
            await play(tctx, "request", flow)
            assert CALL not in flow.metadata
    assert store.calls("inv-1") == []
