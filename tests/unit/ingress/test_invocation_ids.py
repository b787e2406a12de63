"""The ingress mints every invocation id, refuses a header given twice, signs what it forwards
(in-process and over HTTP alike), and shows a caller only its own spans. Real requests through
``httpx.ASGITransport`` (and a real socket for the cluster transport)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from clrk.dev.running import traces_route
from clrk.ingress import (
    AgentTarget,
    CallerKey,
    CallerKeys,
    HttpForwarder,
    IngressSettings,
    InProcessForwarder,
    create_app,
    key_digest,
)
from clrk.ingress import app as app_module
from clrk.telemetry.spans import SpanStore
from clrk_runtime.protocol.keys import namespace_key
from clrk_runtime.protocol.signing import InvalidSignature, verify_request
from tests.support.serving import uvicorn_serving

AGENT = "team-a/bot"
PLATFORM_KEY = b"the-platform-key-of-this-test"


class RecordingShim:
    """Answers 200 and keeps what it received (header names lower-cased, repeats kept)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        self.requests.append({"headers": dict(pairs), "pairs": pairs, "body": body})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})


def _verify(sent: dict[str, Any], agent: str = AGENT, namespace: str = "team-a") -> None:
    headers = sent["headers"]
    verify_request(
        headers.get("x-clrk-signature"),
        namespace_key(PLATFORM_KEY, "request", namespace),
        now=time.time(),
        method="POST",
        agent=agent,
        invocation_id=headers["x-clrk-invocation-id"],
        timeout_ms=headers.get("x-clrk-timeout-ms", ""),
        content_type=headers["content-type"],
        body=sent["body"],
    )


@pytest.fixture
def shim() -> RecordingShim:
    return RecordingShim()


@pytest.fixture
async def client(shim: RecordingShim) -> AsyncIterator[httpx.AsyncClient]:
    forwarder = InProcessForwarder(platform_key=PLATFORM_KEY)
    forwarder.set_apps({AGENT: (AgentTarget(AGENT, 100.0), shim)})
    app = create_app(forwarder, CallerKeys(open_mode=True), IngressSettings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress") as c:
        yield c


CE = [("ce-specversion", "1.0"), ("ce-source", "/shop"), ("ce-type", "order.created")]


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Clrk-TaskAgent", AGENT), *CE, ("ce-id", "checked"), ("ce-id", "used")],
        [("X-Clrk-TaskAgent", AGENT), *CE, ("ce-id", "a"), ("ce-source", "/other")],
        [("X-Clrk-TaskAgent", AGENT), ("content-type", "application/json"), ("Content-Type", "text/plain")],
        [("X-Clrk-TaskAgent", AGENT), ("x-clrk-taskagent", "team-a/other")],
        [("X-Clrk-TaskAgent", AGENT), ("X-Clrk-Timeout-Ms", "10"), ("X-Clrk-Timeout-Ms", "100000")],
    ],
    ids=["ce-id", "ce-source", "content-type", "x-clrk-taskagent", "x-clrk-timeout-ms"],
)
async def test_a_header_given_twice_is_400_naming_it_and_nothing_is_forwarded(
    client: httpx.AsyncClient, shim: RecordingShim, headers: list[tuple[str, str]]
) -> None:
    response = await client.post("/", content=b"{}", headers=headers)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    repeated = [name.lower() for name, _ in headers]
    name = next(n for n in repeated if repeated.count(n) > 1)
    assert error["type"] == "repeated_header"
    assert error["message"] == f"header {name}: sent 2 times; send it once"
    assert shim.requests == [], "the agent never runs"


async def test_a_callers_ce_id_travels_and_the_ingress_mints_the_invocation_id(
    client: httpx.AsyncClient, shim: RecordingShim
) -> None:
    """Sent twice (at-least-once delivery), the same event gets two invocations."""
    headers = {"X-Clrk-TaskAgent": AGENT, "content-type": "application/json", "ce-id": "urn:uuid:order-42"}
    headers.update(dict(CE))
    first = await client.post("/", content=b'{"n": 1}', headers=headers)
    again = await client.post("/", content=b'{"n": 1}', headers=headers)
    ids = [first.headers["x-clrk-invocation-id"], again.headers["x-clrk-invocation-id"]]
    assert first.status_code == again.status_code == 200
    assert len(set(ids)) == 2 and all(i[14] == "7" for i in ids)
    for sent, invocation_id in zip(shim.requests, ids, strict=True):
        event = json.loads(sent["body"])
        assert event["id"] == "urn:uuid:order-42"
        assert event["clrkinvocationid"] == sent["headers"]["x-clrk-invocation-id"] == invocation_id


async def test_the_in_process_transport_signs_for_the_agent(client: httpx.AsyncClient, shim: RecordingShim) -> None:
    response = await client.post("/", content=b'{"q": 1}', headers={"X-Clrk-TaskAgent": AGENT})
    assert response.status_code == 200
    (sent,) = shim.requests
    assert sent["headers"]["content-type"] == "application/cloudevents+json"
    _verify(sent)
    with pytest.raises(InvalidSignature, match="does not match"):
        _verify(sent, agent="team-a/other")
    with pytest.raises(InvalidSignature, match="does not match"):
        _verify(sent, namespace="team-b")


async def test_a_callers_own_signature_header_is_not_forwarded(shim: RecordingShim) -> None:
    """Without a platform key nothing is signed, and a caller cannot sign for the ingress."""
    forwarder = InProcessForwarder()
    forwarder.set_apps({AGENT: (AgentTarget(AGENT, 100.0), shim)})
    app = create_app(forwarder, CallerKeys(open_mode=True), IngressSettings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress") as c:
        response = await c.post("/", content=b"{}", headers={"X-Clrk-TaskAgent": AGENT, "X-Clrk-Signature": "t=1,v1=x"})
    assert response.status_code == 200
    assert "x-clrk-signature" not in shim.requests[0]["headers"]


class _LocalForwarder(HttpForwarder):
    """The cluster transport, its Knative Service URL pointed at a local port."""

    def __init__(self, port: int, platform_key: bytes | None) -> None:
        super().__init__({AGENT: AgentTarget(AGENT, 30.0)}, "cluster.local", platform_key)
        self.port = port

    def url(self, target: AgentTarget) -> str:
        return f"http://127.0.0.1:{self.port}/"


async def test_the_cluster_transport_signs_over_http(shim: RecordingShim) -> None:
    config = uvicorn.Config(shim, host="127.0.0.1", port=0, lifespan="off", log_level="warning")
    async with uvicorn_serving(config) as port:
        forwarder = _LocalForwarder(port, PLATFORM_KEY)
        app = create_app(forwarder, CallerKeys(open_mode=True), IngressSettings())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as c:
            response = await c.post("/", content=b'{"q": 1}', headers={"X-Clrk-TaskAgent": AGENT})
        await forwarder.aclose()
    assert response.status_code == 200
    _verify(shim.requests[0])


def test_the_platform_key_file_is_read_from_clrk_platform_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "platform.key"
    path.write_bytes(PLATFORM_KEY + b"\n")
    monkeypatch.setenv("CLRK_PLATFORM_KEY_FILE", str(path))
    assert IngressSettings().platform_key() == PLATFORM_KEY
    path.write_bytes(b" \n")
    with pytest.raises(ValueError, match="CLRK_PLATFORM_KEY_FILE"):
        IngressSettings().platform_key()
    monkeypatch.delenv("CLRK_PLATFORM_KEY_FILE")
    assert IngressSettings().platform_key() is None


# -- /_clrk/traces ------------------------------------------------------------------------------

KEYS = {"alice": "alice-key-" + "a" * 30, "bob": "bob-key-" + "b" * 30}


@pytest.fixture
def store() -> Iterator[SpanStore]:
    """The ingress's spans go to a SpanStore, as in ``clrk dev``."""
    spans = SpanStore()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    original = app_module._tracer
    app_module._tracer = provider.get_tracer("test")
    try:
        yield spans
    finally:
        app_module._tracer = original


def _traces_app(shim: RecordingShim, store: SpanStore, callers: CallerKeys) -> httpx.AsyncClient:
    forwarder = InProcessForwarder(platform_key=PLATFORM_KEY)
    forwarder.set_apps({AGENT: (AgentTarget(AGENT, 100.0), shim)})
    app = create_app(forwarder, callers, IngressSettings(), extra_routes=[traces_route(store, callers)])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress")


def _keys() -> CallerKeys:
    keys = [CallerKey(f"team-a/{name}", key_digest(key), frozenset({AGENT})) for name, key in KEYS.items()]
    return CallerKeys(keys)


def _bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


async def test_traces_want_a_callers_key_and_show_it_only_its_own(shim: RecordingShim, store: SpanStore) -> None:
    async with _traces_app(shim, store, _keys()) as c:
        mine = [
            (await c.post("/", content=b"{}", headers={"X-Clrk-TaskAgent": AGENT, **_bearer("alice")}))
            for _ in range(2)
        ]
        theirs = await c.post("/", content=b"{}", headers={"X-Clrk-TaskAgent": AGENT, **_bearer("bob")})
        anonymous = await c.get("/_clrk/traces")
        wrong = await c.get("/_clrk/traces", headers={"Authorization": "Bearer guessed"})
        alice = await c.get("/_clrk/traces", headers=_bearer("alice"))
        peek = await c.get(
            "/_clrk/traces",
            params={"invocation": theirs.headers["x-clrk-invocation-id"]},
            headers=_bearer("alice"),
        )
    assert [r.status_code for r in (*mine, theirs)] == [200, 200, 200]
    for refused in (anonymous, wrong):
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["type"] == "unauthenticated"
        assert theirs.headers["x-clrk-invocation-id"] not in refused.text
    assert alice.status_code == 200
    shown = {span["attributes"]["clrk.invocation.id"] for span in alice.json()["spans"]}
    assert shown == {r.headers["x-clrk-invocation-id"] for r in mine}
    assert peek.status_code == 200 and peek.json()["spans"] == [], "another caller's invocation is not shown"


async def test_in_open_mode_traces_show_every_span(shim: RecordingShim, store: SpanStore) -> None:
    async with _traces_app(shim, store, CallerKeys(open_mode=True)) as c:
        called = await c.post("/", content=b"{}", headers={"X-Clrk-TaskAgent": AGENT})
        traces = await c.get("/_clrk/traces")
    assert traces.status_code == 200
    assert [s["attributes"]["clrk.invocation.id"] for s in traces.json()["spans"]] == [
        called.headers["x-clrk-invocation-id"]
    ]
