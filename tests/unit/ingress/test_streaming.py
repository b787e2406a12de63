"""A synchronous ``Accept: text/event-stream`` call through the ingress: the shim's events passed on
byte for byte, whole events at a time, ending with an outcome (the ingress's own when the shim's
stream breaks), a refusal as it is, and a client leaving closes the shim's request. Small ASGI
shims speaking the stream contract, in-process and behind a real socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from httpx_sse import EventSource, ServerSentEvent
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from clrk.ingress import AgentTarget, CallerKeys, IngressSettings, InProcessForwarder, InvocationRecord, create_app
from clrk.ingress import app as app_module
from clrk_runtime.protocol.streams import OUTPUT, STREAM_HEADERS, Outcome, encode_event, opening
from tests.support.serving import uvicorn_serving

AGENT = "team-a/bot"
SSE = {"X-Clrk-TaskAgent": AGENT, "Accept": "text/event-stream"}


class StreamingShim:
    """Answers with ``chunks`` as a stream (one send each), then ends as ``end`` says: ``done``
    (complete), ``raise`` (breaks), ``hang`` (silent until its caller leaves). It waits for
    ``gate`` (when given) after its first chunk. Keeps each request and whether it heard its
    caller leave."""

    def __init__(self, chunks: list[bytes], end: str = "done", gate: asyncio.Event | None = None) -> None:
        self.chunks, self.end, self.gate = chunks, end, gate
        self.requests: list[dict[str, str]] = []
        self.left = asyncio.Event()
        self.finished = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        self.requests.append({k.decode(): v.decode() for k, v in scope["headers"]})
        headers = [(k.lower().encode(), v.encode()) for k, v in STREAM_HEADERS]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for n, chunk in enumerate(self.chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if n == 0 and self.gate is not None:
                await self.gate.wait()
        if self.end == "raise":
            raise ConnectionResetError("the shim went away")
        if self.end == "hang":
            while (await receive())["type"] != "http.disconnect":
                pass
            self.left.set()
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self.finished = True


class Spans:
    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    def only(self) -> ReadableSpan:
        (span,) = self.exporter.get_finished_spans()
        return span


@pytest.fixture
def spans() -> Iterator[Spans]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    original = app_module._tracer
    app_module._tracer = provider.get_tracer("test")
    try:
        yield Spans(exporter)
    finally:
        app_module._tracer = original


def ingress(shim: Any, records: list[InvocationRecord], timeout: float = 30.0, grace: float = 2.0) -> Any:
    forwarder = InProcessForwarder()
    forwarder.set_apps({AGENT: (AgentTarget(AGENT, timeout), shim)})
    settings = IngressSettings(grace_seconds=grace)
    return create_app(forwarder, CallerKeys(open_mode=True), settings, on_finished=records.append)


async def call(app: Any, headers: dict[str, str] = SSE) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress") as client:
        return await client.post("/", content=b'{"q": 1}', headers=headers)


def events(response: httpx.Response) -> list[ServerSentEvent]:
    return list(EventSource(response).iter_sse())


def output(n: int, text: str) -> bytes:
    return encode_event(OUTPUT, text, n)


async def test_the_shims_events_pass_on_byte_for_byte_and_stop_at_its_outcome(spans: Spans) -> None:
    outcome = Outcome("shim-id", 200, exit_code=0, content_type="application/json").encode(3)
    second = output(2, '{"step": 2}')
    chunks = [opening("shim-id"), output(1, "one"), second[:9], second[9:] + b": keep-alive\n\n", outcome]
    shim = StreamingShim([*chunks, output(4, "after the outcome")])
    records: list[InvocationRecord] = []
    response = await call(ingress(shim, records))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    invocation_id = response.headers["x-clrk-invocation-id"]
    assert response.content == b"".join(chunks), "the shim's bytes, nothing after its outcome"
    assert [(e.event, e.data) for e in events(response)][:2] == [("output", "one"), ("output", '{"step": 2}')]
    (sent,) = shim.requests
    assert sent["accept"] == "text/event-stream" and sent["x-clrk-invocation-id"] == invocation_id
    (record,) = records
    assert (record.invocation_id, record.status, record.outcome_status) == (invocation_id, 200, 200)
    span = spans.only()
    assert span.attributes is not None and span.attributes["clrk.outcome.status"] == 200
    assert span.status.status_code != StatusCode.ERROR


async def test_a_stream_broken_mid_event_ends_with_the_ingress_outcome(spans: Spans) -> None:
    half = output(2, "half of a line that never ends")[:20]
    shim = StreamingShim([opening("x"), output(1, "whole"), half], end="raise")
    records: list[InvocationRecord] = []
    response = await call(ingress(shim, records))
    invocation_id = response.headers["x-clrk-invocation-id"]
    assert half not in response.content, "an event the shim did not finish never reaches the caller"
    got = events(response)
    assert [(e.event, e.data) for e in got[:-1]] == [("output", "whole")]
    assert (got[-1].event, got[-1].id) == ("outcome", "2")
    outcome = json.loads(got[-1].data)
    assert (outcome["invocationId"], outcome["status"]) == (invocation_id, 502)
    assert outcome["error"]["type"] == "agent_unavailable" and AGENT in outcome["error"]["message"]
    assert records[0].outcome_status == 502
    assert spans.only().status.status_code == StatusCode.ERROR


async def test_a_stream_that_ends_without_an_outcome_gets_one() -> None:
    shim = StreamingShim([opening("x"), output(1, "whole")])
    response = await call(ingress(shim, []))
    last = events(response)[-1]
    assert (last.event, json.loads(last.data)["status"]) == ("outcome", 502)
    assert "without an outcome" in json.loads(last.data)["error"]["message"]


async def test_a_silent_shim_is_cut_at_the_deadline_with_a_504_outcome() -> None:
    shim = StreamingShim([opening("x"), output(1, "then nothing")], end="hang")
    records: list[InvocationRecord] = []
    response = await call(ingress(shim, records, timeout=0.2, grace=0))
    last = events(response)[-1]
    outcome = json.loads(last.data)
    assert (last.event, last.id, outcome["status"]) == ("outcome", "2", 504)
    assert outcome["error"]["type"] == "deadline_exceeded"
    assert shim.left.is_set(), "the ingress left the shim's stream: the shim heard its caller gone"
    assert records[0].outcome_status == 504


async def test_a_refusal_is_relayed_as_it_is() -> None:
    async def refusing(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"content-type", b"application/json"), (b"retry-after", b"1"), (b"x-clrk-invocation-id", b"shim")]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"error": {"type": "no_capacity"}}'})

    records: list[InvocationRecord] = []
    response = await call(ingress(refusing, records))
    assert (response.status_code, response.json()["error"]["type"]) == (503, "no_capacity")
    assert response.headers["retry-after"] == "1"
    assert response.headers["x-clrk-invocation-id"] == records[0].invocation_id != "shim"
    assert (records[0].status, records[0].outcome_status) == (503, None)


async def test_accept_json_is_buffered_and_the_shim_is_not_asked_for_events() -> None:
    shim = StreamingShim([b"plain"])
    response = await call(ingress(shim, []), {"X-Clrk-TaskAgent": AGENT, "Accept": "application/json"})
    assert response.content == b"plain"
    assert "accept" not in shim.requests[0]


@pytest.mark.parametrize("accept", ["text/event-stream", "application/json"])
async def test_a_synchronous_call_is_cut_at_the_sync_limit(accept: str) -> None:
    shim = StreamingShim([b"ok"])
    await call(ingress(shim, [], timeout=3600), {"X-Clrk-TaskAgent": AGENT, "Accept": accept})
    assert 599_000 < int(shim.requests[0]["x-clrk-timeout-ms"]) <= 600_000


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, StreamingShim]]:
    """The ingress on a real socket, its agent a gated streaming shim."""
    shim = StreamingShim([opening("x") + output(1, "first"), output(2, "second")], end="hang", gate=asyncio.Event())
    config = uvicorn.Config(ingress(shim, []), host="127.0.0.1", port=0, lifespan="off", log_level="warning")
    async with uvicorn_serving(config) as port:
        yield f"http://127.0.0.1:{port}", shim


async def test_the_first_event_arrives_while_the_shim_still_runs(served: tuple[str, StreamingShim]) -> None:
    url, shim = served
    assert shim.gate is not None
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        async with client.stream("POST", "/", content=b"{}", headers=SSE) as response:
            source = EventSource(response).aiter_sse()
            first = await anext(source)
            assert (first.event, first.data) == ("output", "first")
            assert not shim.gate.is_set(), "it came before the shim was let go on"
            shim.gate.set()
            second = await anext(source)
            assert (second.event, second.data) == ("output", "second")
            await source.aclose()
        # The client left mid-stream: the ingress closed the shim's request.
        await asyncio.wait_for(shim.left.wait(), 10)
