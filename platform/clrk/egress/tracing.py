"""Tracing: one OpenTelemetry CLIENT span per model call, a child of the invocation's span.

An addon using only the OpenTelemetry API (the process's ``main()`` configures the SDK). The
parent comes from the proxy token's ``traceparent``. Attributes follow the GenAI semantic
conventions: ``gen_ai.usage.input_tokens`` counts all input, cache included (as the conventions
ask), with ``gen_ai.usage.cache_read_input_tokens`` and ``…cache_creation_input_tokens`` beside.
Credential headers are recorded only as ``["[redacted]"]``.
"""

from __future__ import annotations

from typing import Any

from mitmproxy import http
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from clrk.egress.identity import CLAIMS
from clrk.egress.usage import CALL, ModelCall
from clrk.telemetry.redaction import header_attributes

__all__ = ["ModelCallTracer"]

_SPAN = "clrk.span"
_RECORDED_HEADERS = ("x-api-key", "authorization", "anthropic-version", "anthropic-beta")
_propagator = TraceContextTextMapPropagator()


def _header_items(headers: Any) -> list[tuple[str, str]]:
    return list(headers.items(multi=True))


class ModelCallTracer:
    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer("clrk.egress", tracer_provider=tracer_provider)

    def request(self, flow: http.HTTPFlow) -> None:
        call: ModelCall | None = flow.metadata.get(CALL)
        claims = flow.metadata.get(CLAIMS)
        if call is None or claims is None:
            return
        parent = _propagator.extract({"traceparent": claims.traceparent})
        model = call.request.model
        attributes: dict[str, str | int | list[str]] = {
            "gen_ai.system": "anthropic",
            "gen_ai.provider.name": "anthropic",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "server.address": flow.request.pretty_host,
            "server.port": flow.request.port,
            "http.request.method": flow.request.method,
            "clrk.invocation.id": call.invocation_id,
            "clrk.agent": call.agent,
        }
        if call.request.max_tokens:
            attributes["gen_ai.request.max_tokens"] = call.request.max_tokens
        attributes.update(header_attributes(_header_items(flow.request.headers), _RECORDED_HEADERS))
        flow.metadata[_SPAN] = self._tracer.start_span(
            f"chat {model}".strip(),
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=int(call.started_at * 1e9),
        )

    def response(self, flow: http.HTTPFlow) -> None:
        self._end(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._end(flow)

    def _end(self, flow: http.HTTPFlow) -> None:
        span: trace.Span | None = flow.metadata.pop(_SPAN, None)
        call: ModelCall | None = flow.metadata.get(CALL)
        if span is None or call is None:
            return
        u = call.usage
        if u.model:
            span.set_attribute("gen_ai.response.model", u.model)
        if u.response_id:
            span.set_attribute("gen_ai.response.id", u.response_id)
        if u.stop_reason:
            span.set_attribute("gen_ai.response.finish_reasons", [u.stop_reason])
        span.set_attribute(
            "gen_ai.usage.input_tokens",
            u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens,
        )
        span.set_attribute("gen_ai.usage.output_tokens", u.output_tokens)
        span.set_attribute("gen_ai.usage.cache_read_input_tokens", u.cache_read_input_tokens)
        span.set_attribute("gen_ai.usage.cache_creation_input_tokens", u.cache_creation_input_tokens)
        if call.status:
            span.set_attribute("http.response.status_code", call.status)
        failed = call.error or call.status >= 400 or not call.status
        if failed:
            error_type = call.usage.error_type or call.error or str(call.status or "error")
            span.set_attribute("error.type", error_type)
            span.set_status(Status(StatusCode.ERROR, error_type))
        end = call.finished_at
        span.end(end_time=int(end * 1e9) if end is not None else None)
