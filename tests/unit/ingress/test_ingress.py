"""The ingress contract, in-process through httpx.ASGITransport. The shim behind it is a small
recording ASGI app here; the real shim is behind it in tests/integration/dev."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clrk.ingress import (
    AgentTarget,
    CallerKey,
    CallerKeys,
    IngressSettings,
    InProcessForwarder,
    InvocationRecord,
    create_app,
    key_digest,
)
from clrk_runtime.protocol.envelope import build_envelope

AGENT = "default/jq-bot"


class RecordingShim:
    """Answers like the shim: echoes what it received as JSON."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.requests.append({"headers": headers, "body": body})
        reply = json.dumps({"ok": True}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": reply})


@pytest.fixture
def shim() -> RecordingShim:
    return RecordingShim()


@pytest.fixture
def records() -> list[InvocationRecord]:
    return []


def _client(
    shim: RecordingShim,
    records: list[InvocationRecord],
    callers: CallerKeys | None = None,
    **settings: Any,
) -> httpx.AsyncClient:
    forwarder = InProcessForwarder()
    forwarder.set_apps({AGENT: (AgentTarget(AGENT, 100.0), shim)})
    app = create_app(
        forwarder,
        callers or CallerKeys(open_mode=True),
        IngressSettings(**settings),
        records.append,
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress")


@pytest.fixture
async def client(shim: RecordingShim, records: list[InvocationRecord]) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(shim, records) as c:
        yield c


def _assert_error(response: httpx.Response, status: int, type_: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == type_
    assert error["message"]
    return error


async def test_json_body_becomes_the_envelope_the_shim_receives(
    client: httpx.AsyncClient, shim: RecordingShim, records: list[InvocationRecord]
) -> None:
    body = b'{"input": [1, 2], "want": "sum"}'
    response = await client.post(
        "/", content=body, headers={"X-Clrk-TaskAgent": AGENT, "content-type": "application/json"}
    )
    assert response.status_code == 200
    invocation_id = response.headers["x-clrk-invocation-id"]
    sent = shim.requests[0]
    assert sent["headers"]["content-type"] == "application/cloudevents+json"
    assert sent["headers"]["x-clrk-invocation-id"] == invocation_id
    event = json.loads(sent["body"])
    assert (event["specversion"], event["id"], event["type"]) == ("1.0", invocation_id, "dev.clrk.invocation")
    assert event["source"] == "/clrk/ingress"
    assert sent["body"].endswith(b'"data": ' + body + b"}"), "the caller's bytes are the data, untouched"
    # The shim builds its envelope with the same rules: the ingress's passes through unchanged.
    again = build_envelope(sent["headers"], sent["body"], invocation_id=invocation_id, source="/clrk/shim")
    assert (again.event_id, again.body) == (invocation_id, sent["body"])
    assert event["clrkinvocationid"] == invocation_id
    assert 0 < int(sent["headers"]["x-clrk-timeout-ms"]) <= 100_000
    assert records[0].invocation_id == invocation_id and records[0].status == 200
    # UUIDv7: version nibble 7
    assert invocation_id[14] == "7"


async def test_caller_cloudevents_pass_through(client: httpx.AsyncClient, shim: RecordingShim) -> None:
    binary = {
        "X-Clrk-TaskAgent": AGENT,
        "ce-specversion": "1.0",
        "ce-id": "order-42",
        "ce-source": "/shop",
        "ce-type": "order.created",
        "content-type": "application/json",
    }
    response = await client.post("/", content=b'{"n": 1}', headers=binary)
    invocation_id = response.headers["x-clrk-invocation-id"]
    assert invocation_id != "order-42" and invocation_id[14] == "7", "the platform mints the invocation id"
    assert shim.requests[-1]["headers"]["x-clrk-invocation-id"] == invocation_id
    sent = json.loads(shim.requests[-1]["body"])
    assert (sent["id"], sent["source"], sent["type"], sent["data"]) == ("order-42", "/shop", "order.created", {"n": 1})
    assert sent["clrkinvocationid"] == invocation_id
    event = {"specversion": "1.0", "id": "evt-7", "source": "/s", "type": "t", "data": {"x": 1}}
    structured = {"X-Clrk-TaskAgent": AGENT, "content-type": "application/cloudevents+json"}
    response = await client.post("/", content=json.dumps(event).encode(), headers=structured)
    invocation_id = response.headers["x-clrk-invocation-id"]
    assert invocation_id != "evt-7"
    sent = json.loads(shim.requests[-1]["body"])
    assert sent.pop("time"), "an event without time gets one on arrival (the CloudEvents SDK's rule)"
    assert sent.pop("clrkinvocationid") == invocation_id
    assert sent == event


@pytest.mark.parametrize(
    ("headers", "body", "status", "type_"),
    [
        ({}, b"{}", 400, "missing_agent"),
        ({"X-Clrk-TaskAgent": "jq-bot"}, b"{}", 400, "invalid_agent"),
        ({"X-Clrk-TaskAgent": "Default/JQ"}, b"{}", 400, "invalid_agent"),
        ({"X-Clrk-TaskAgent": "default/nope"}, b"{}", 404, "unknown_agent"),
        (
            {"X-Clrk-TaskAgent": AGENT, "content-type": "application/json"},
            b"{not json",
            400,
            "invalid_json",
        ),
        ({"X-Clrk-TaskAgent": AGENT}, b"", 400, "invalid_json"),
        (
            {"X-Clrk-TaskAgent": AGENT, "ce-specversion": "1.0", "ce-source": "/s", "ce-type": "t"},
            b"{}",
            400,
            "invalid_cloudevent",
        ),
        (
            {
                "X-Clrk-TaskAgent": AGENT,
                "ce-specversion": "0.3",
                "ce-id": "a",
                "ce-source": "/s",
                "ce-type": "t",
            },
            b"{}",
            400,
            "invalid_cloudevent",
        ),
        (
            {
                "X-Clrk-TaskAgent": AGENT,
                "ce-specversion": "1.0",
                "ce-id": "a b/../c",
                "ce-source": "/s",
                "ce-type": "t",
            },
            b"{}",
            400,
            "invalid_cloudevent",
        ),
        (
            {"X-Clrk-TaskAgent": AGENT, "content-type": "application/cloudevents+json"},
            b'{"id": "x"}',
            400,
            "invalid_cloudevent",
        ),
        (
            {"X-Clrk-TaskAgent": AGENT, "content-type": "application/cloudevents+json"},
            b"[1]",
            400,
            "invalid_cloudevent",
        ),
        ({"X-Clrk-TaskAgent": AGENT, "X-Clrk-Timeout-Ms": "soon"}, b"{}", 400, "invalid_timeout"),
    ],
)
async def test_bad_requests(
    client: httpx.AsyncClient,
    shim: RecordingShim,
    headers: dict[str, str],
    body: bytes,
    status: int,
    type_: str,
) -> None:
    _assert_error(await client.post("/", content=body, headers=headers), status, type_)
    assert shim.requests == [], "a bad request never reaches the agent"


async def test_other_methods_and_paths(client: httpx.AsyncClient) -> None:
    response = await client.get("/", headers={"X-Clrk-TaskAgent": AGENT})
    _assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"
    _assert_error(await client.post("/nope", content=b"{}"), 404, "not_found")
    document = (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    assert "/" in document["paths"]


async def test_body_cap(shim: RecordingShim, records: list[InvocationRecord]) -> None:
    async with _client(shim, records, max_body_bytes=10) as client:
        error = _assert_error(
            await client.post("/", content=b'{"x": "' + b"a" * 20 + b'"}', headers={"X-Clrk-TaskAgent": AGENT}),
            413,
            "payload_too_large",
        )
        assert "10-byte" in error["message"]

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(5):
                yield b"[1,2,3,4]"

        _assert_error(
            await client.post("/", content=chunks(), headers={"X-Clrk-TaskAgent": AGENT}),
            413,
            "payload_too_large",
        )
    assert shim.requests == []


async def test_bearer_keys(shim: RecordingShim, records: list[InvocationRecord]) -> None:
    keys = CallerKeys([CallerKey("default/reporting", key_digest("s3cret-key"), frozenset({AGENT}))])
    other = CallerKeys([CallerKey("default/other", key_digest("other-key"), frozenset({"default/else"}))])
    async with _client(shim, records, callers=keys) as client:
        _assert_error(
            await client.post("/", content=b"{}", headers={"X-Clrk-TaskAgent": AGENT}),
            401,
            "unauthenticated",
        )
        _assert_error(
            await client.post(
                "/",
                content=b"{}",
                headers={"X-Clrk-TaskAgent": AGENT, "Authorization": "Bearer wrong"},
            ),
            401,
            "unauthenticated",
        )
        ok = await client.post(
            "/",
            content=b"{}",
            headers={"X-Clrk-TaskAgent": AGENT, "Authorization": "Bearer s3cret-key"},
        )
        assert ok.status_code == 200
        assert records[-1].caller == "default/reporting"
    async with _client(shim, records, callers=other) as client:
        error = _assert_error(
            await client.post(
                "/",
                content=b"{}",
                headers={"X-Clrk-TaskAgent": AGENT, "Authorization": "Bearer other-key"},
            ),
            403,
            "forbidden",
        )
        assert "default/other" in error["message"] and "other-key" not in error["message"]


async def test_which_agents_exist_is_told_only_to_callers_who_may_call_them(
    shim: RecordingShim, records: list[InvocationRecord]
) -> None:
    keys = CallerKeys(
        [
            CallerKey("default/some", key_digest("some-key"), frozenset({AGENT})),
            CallerKey("default/any", key_digest("any-key"), frozenset({"*"})),
        ]
    )
    unknown = {"X-Clrk-TaskAgent": "default/nope"}
    async with _client(shim, records, callers=keys) as client:
        _assert_error(await client.post("/", content=b"{}", headers=unknown), 401, "unauthenticated")
        restricted = {**unknown, "Authorization": "Bearer some-key"}
        _assert_error(await client.post("/", content=b"{}", headers=restricted), 403, "forbidden")
        allowed = {**unknown, "Authorization": "Bearer any-key"}
        _assert_error(await client.post("/", content=b"{}", headers=allowed), 404, "unknown_agent")
    assert shim.requests == []


def test_open_mode_is_the_default_only_on_loopback() -> None:
    assert IngressSettings(host="127.0.0.1").open_mode
    assert IngressSettings(host="::1").open_mode
    assert not IngressSettings(host="0.0.0.0").open_mode
    assert IngressSettings(host="0.0.0.0", auth="open").open_mode
    assert not IngressSettings(host="127.0.0.1", auth="keys").open_mode


async def test_server_span_parents_the_invocation(client: httpx.AsyncClient, shim: RecordingShim) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    from clrk.ingress import app as app_module

    original = app_module._tracer
    app_module._tracer = tracer
    try:
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        await client.post("/", content=b"{}", headers={"X-Clrk-TaskAgent": AGENT, "traceparent": parent})
    finally:
        app_module._tracer = original
    (span,) = exporter.get_finished_spans()
    assert span.kind == trace.SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    forwarded = shim.requests[-1]["headers"]["traceparent"]
    assert forwarded.split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert forwarded.split("-")[2] == format(span.context.span_id, "016x")
    assert span.attributes is not None and span.attributes["clrk.agent"] == AGENT


async def test_an_agent_at_capacity_is_refused_at_once(shim: RecordingShim) -> None:
    forwarder = InProcessForwarder(saturated=lambda ref: ref == AGENT)
    forwarder.set_apps({AGENT: (AgentTarget(AGENT, 100.0), shim)})
    app = create_app(forwarder, CallerKeys(open_mode=True), IngressSettings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress") as client:
        response = await client.post("/", content=b"{}", headers={"X-Clrk-TaskAgent": AGENT})
    _assert_error(response, 503, "no_capacity")
    assert response.headers["retry-after"] == "1"
    assert shim.requests == []
    await forwarder.aclose()
