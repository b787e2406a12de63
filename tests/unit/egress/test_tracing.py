"""Tracing addon, no sockets: one span per model call, under the invocation's, credentials redacted."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from clrk.egress.tracing import ModelCallTracer
from tests.support.addons import addon_context, identified, json_response, messages_flow, play, request_flow, with_call
from tests.support.egress import AGENT, TRACEPARENT

PLACEHOLDER = "sk-agent-placeholder"


def tracer() -> tuple[ModelCallTracer, InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return ModelCallTracer(provider), spans


async def test_one_client_span_per_model_call_with_tokens_and_no_credentials() -> None:
    addon, spans = tracer()
    async with addon_context(addon) as tctx:
        flow = messages_flow(headers=[("x-api-key", PLACEHOLDER), ("authorization", f"Bearer {PLACEHOLDER}")])
        call = with_call(flow, "inv-9")
        call.started_at, call.finished_at, call.status = 10.0, 12.5, 200
        await play(tctx, "request", flow)
        call.usage.model, call.usage.response_id, call.usage.stop_reason = "claude-test-1", "msg_1", "end_turn"
        call.usage.input_tokens, call.usage.cache_read_input_tokens, call.usage.output_tokens = 3, 40, 7
        flow.response = json_response(200, {})
        await play(tctx, "response", flow)
    [span] = spans.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert span.name == "chat claude-test"
    assert span.kind is SpanKind.CLIENT
    assert span.parent is not None
    assert format(span.parent.trace_id, "032x") == TRACEPARENT.split("-")[1]  # the invocation's trace
    assert format(span.parent.span_id, "016x") == TRACEPARENT.split("-")[2]
    assert (span.start_time, span.end_time) == (10_000_000_000, 12_500_000_000)
    assert attributes["http.request.header.x-api-key"] == ("[redacted]",)
    assert attributes["http.request.header.authorization"] == ("[redacted]",)
    assert attributes["http.request.header.anthropic-version"] == ("2023-06-01",)
    assert PLACEHOLDER not in repr(attributes)
    assert attributes["clrk.invocation.id"] == "inv-9"
    assert attributes["clrk.agent"] == AGENT
    assert attributes["gen_ai.request.max_tokens"] == 100
    assert attributes["gen_ai.response.model"] == "claude-test-1"
    assert attributes["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert attributes["gen_ai.usage.input_tokens"] == 43  # cache included, as the conventions ask
    assert attributes["gen_ai.usage.cache_read_input_tokens"] == 40
    assert attributes["gen_ai.usage.output_tokens"] == 7
    assert span.status.status_code is StatusCode.UNSET


async def test_a_refused_or_failed_call_ends_its_span_in_error() -> None:
    addon, spans = tracer()
    async with addon_context(addon) as tctx:
        flow = messages_flow()
        call = with_call(flow)
        await play(tctx, "request", flow)
        call.status, call.finished_at = 429, 1.0
        call.usage.error_type = "rate_limit_error"
        flow.response = json_response(429, {})
        await play(tctx, "response", flow)
    [span] = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "rate_limit_error"
    assert (span.attributes or {})["http.response.status_code"] == 429


async def test_other_traffic_makes_no_span() -> None:
    addon, spans = tracer()
    async with addon_context(addon) as tctx:
        flow = identified(request_flow("example.org"))
        await play(tctx, "request", flow)
        flow.response = json_response(200, {})
        await play(tctx, "response", flow)
    assert spans.get_finished_spans() == ()
