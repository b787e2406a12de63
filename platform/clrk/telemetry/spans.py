"""Keep recent spans in memory (for the TUI's otel-traces pane and ``clrk traces``), and set up
the SDK once, in a process's main: this store, plus OTLP export when ``OTEL_*`` asks for it."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

__all__ = ["SpanStore", "configure_tracing", "span_to_dict"]


class SpanStore(SpanExporter):
    """The last ``capacity`` finished spans, newest last."""

    def __init__(self, capacity: int = 2000) -> None:
        self._spans: deque[ReadableSpan] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            self._spans.extend(spans)
        return SpanExportResult.SUCCESS

    def spans(self, invocation_id: str | None = None) -> list[ReadableSpan]:
        with self._lock:
            spans = list(self._spans)
        if invocation_id is None:
            return spans
        traces = {
            s.context.trace_id
            for s in spans
            if s.attributes and s.attributes.get("clrk.invocation.id") == invocation_id
        }
        return [s for s in spans if s.context.trace_id in traces]


def span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    """A JSON-ready view of a span (attributes as recorded: credentials are already redacted)."""
    parent = span.parent
    return {
        "name": span.name,
        "kind": span.kind.name,
        "traceId": format(span.context.trace_id, "032x"),
        "spanId": format(span.context.span_id, "016x"),
        "parentSpanId": format(parent.span_id, "016x") if parent else None,
        "start": (span.start_time or 0) / 1e9,
        "durationMs": ((span.end_time or 0) - (span.start_time or 0)) / 1e6,
        "status": span.status.status_code.name,
        "attributes": {k: list(v) if isinstance(v, tuple) else v for k, v in (span.attributes or {}).items()},
    }


def configure_tracing(service_name: str, environ: Mapping[str, str]) -> tuple[TracerProvider, SpanStore]:
    """A TracerProvider feeding a :class:`SpanStore`, and OTLP/HTTP export when
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (the
    exporter reads the other ``OTEL_*`` variables itself)."""
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    store = SpanStore()
    provider.add_span_processor(SimpleSpanProcessor(store))
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider, store
