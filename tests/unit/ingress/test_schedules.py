"""``POST /_clrk/schedules/<namespace>/<agent>/<token>``: a TaskSchedule's run, posted as a
PingSource's adapter posts it (binary CloudEvent, no header of its own), through the in-process
ingress to a recording shim. The token is the only credential: a Caller key is neither needed
nor forwarded, and a wrong token, another agent's token or an agent that is gone all get the same
404 with nothing forwarded."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clrk.api.schedules import schedule_path
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
from clrk_runtime.protocol.headers import SIGNATURE_HEADER
from clrk_runtime.protocol.keys import namespace_key, schedule_token
from clrk_runtime.protocol.signing import verify_request

PLATFORM = b"platform-key-for-the-schedule-tests"
AGENT, OTHER = "team-a/jq-bot", "team-a/other"
DATA = {"report": "nightly"}


class RecordingShim:
    """Answers 200 ``{"ok": true}`` like a shim whose agent succeeded, keeping what it received."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests.append({"headers": {k.decode(): v.decode() for k, v in scope["headers"]}, "body": body})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"ok": true}'})


def ping(**extra: str) -> dict[str, str]:
    """The headers Knative's PingSource adapter sends (binary mode, the schedule's contentType)."""
    return {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": "1f1b0a4e-6a39-4d67-9a3a-0f5f2f4c2c11",
        "ce-source": "/apis/v1/namespaces/team-a/pingsources/nightly",
        "ce-type": "dev.knative.sources.ping",
        "ce-time": "2026-12-05T03:00:00Z",
        **extra,
    }


def url(ref: str, key: bytes = PLATFORM) -> str:
    namespace, name = ref.split("/")
    return schedule_path(namespace, name, schedule_token(key, namespace, name))


@pytest.fixture
def shims() -> dict[str, RecordingShim]:
    return {AGENT: RecordingShim(), OTHER: RecordingShim()}


@pytest.fixture
def records() -> list[InvocationRecord]:
    return []


def _client(
    shims: dict[str, RecordingShim], records: list[InvocationRecord], key: bytes | None = PLATFORM
) -> httpx.AsyncClient:
    forwarder = InProcessForwarder(platform_key=PLATFORM)
    forwarder.set_apps({ref: (AgentTarget(ref, 100.0), shim) for ref, shim in shims.items()})
    # Keys mode with a Caller that may call everything: POST / needs a key, the schedule route not.
    callers = CallerKeys([CallerKey("team-a/reporting", key_digest("caller-key"), frozenset({"*"}))])
    app = create_app(forwarder, callers, IngressSettings(auth="keys"), records.append, schedule_key=key)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress")


@pytest.fixture
async def client(shims: dict[str, RecordingShim], records: list[InvocationRecord]) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(shims, records) as c:
        yield c


def _not_found(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 404, response.text
    body: dict[str, Any] = response.json()
    assert body["error"]["type"] == "unknown_schedule"
    return body


async def test_a_ping_with_the_agents_token_runs_it_signed_with_a_minted_id(
    client: httpx.AsyncClient, shims: dict[str, RecordingShim], records: list[InvocationRecord]
) -> None:
    response = await client.post(url(AGENT), headers=ping(), content=json.dumps(DATA).encode())
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True}
    invocation_id = response.headers["x-clrk-invocation-id"]
    (sent,) = shims[AGENT].requests
    envelope = json.loads(sent["body"])
    assert envelope["type"] == "dev.knative.sources.ping"
    assert envelope["source"] == "/apis/v1/namespaces/team-a/pingsources/nightly"
    assert envelope["data"] == DATA
    assert invocation_id != "1f1b0a4e-6a39-4d67-9a3a-0f5f2f4c2c11"
    assert sent["headers"]["x-clrk-invocation-id"] == invocation_id
    # Signed for that agent, so a shim holding its namespace's request key runs it.
    verify_request(
        sent["headers"][SIGNATURE_HEADER.lower()],
        namespace_key(PLATFORM, "request", "team-a"),
        now=time.time(),
        method="POST",
        agent=AGENT,
        invocation_id=invocation_id,
        timeout_ms=sent["headers"]["x-clrk-timeout-ms"],
        content_type=sent["headers"]["content-type"],
        body=sent["body"],
    )
    assert [(r.agent, r.status, r.caller) for r in records] == [(AGENT, 200, None)]
    assert shims[OTHER].requests == []


async def test_the_path_names_the_agent_whatever_the_headers_say(
    client: httpx.AsyncClient, shims: dict[str, RecordingShim]
) -> None:
    headers = ping(**{"X-Clrk-TaskAgent": OTHER, "Authorization": "Bearer caller-key"})
    response = await client.post(url(AGENT), headers=headers, content=b"{}")
    assert response.status_code == 200
    assert len(shims[AGENT].requests) == 1 and shims[OTHER].requests == []
    assert "authorization" not in shims[AGENT].requests[0]["headers"]


async def test_wrong_tokens_and_gone_agents_get_one_404_and_run_nothing(
    client: httpx.AsyncClient, shims: dict[str, RecordingShim], records: list[InvocationRecord]
) -> None:
    good = url(AGENT)
    attempts = [
        good[:-1] + ("A" if good[-1] != "A" else "B"),  # one character off
        good.rsplit("/", 1)[0] + "/" + schedule_token(PLATFORM, "team-a", "other"),  # another agent's token
        good.rsplit("/", 1)[0] + "/" + schedule_token(b"another-platform", "team-a", "jq-bot"),
        good.rsplit("/", 1)[0] + "/" + namespace_key(PLATFORM, "request", "team-a").decode(),  # a namespace key
        good.rsplit("/", 1)[0] + "/" + "%C3%A9" * 10,  # not ASCII
        url("team-a/gone"),  # the right token for an agent that does not exist
        url("team-b/jq-bot"),
    ]
    bodies = [_not_found(await client.post(path, headers=ping(), content=b"{}")) for path in attempts]
    assert all(body == bodies[0] for body in bodies)
    assert "team-a" not in json.dumps(bodies[0])  # names nothing of the path
    assert shims[AGENT].requests == [] and shims[OTHER].requests == [] and records == []


async def test_without_the_platform_key_the_route_runs_nothing(
    shims: dict[str, RecordingShim], records: list[InvocationRecord]
) -> None:
    async with _client(shims, records, key=None) as client:
        _not_found(await client.post(url(AGENT), headers=ping(), content=b"{}"))
    assert shims[AGENT].requests == []


async def test_other_methods_get_405_without_the_token_echoed(client: httpx.AsyncClient) -> None:
    path = url(AGENT)
    response = await client.get(path)
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert path.rsplit("/", 1)[1] not in response.text


async def test_bad_input_gets_the_same_400s_as_post_root(
    client: httpx.AsyncClient, shims: dict[str, RecordingShim]
) -> None:
    response = await client.post(url(AGENT), headers=ping(), content=b"{not json")
    assert response.status_code == 400, response.text
    response = await client.post(url(AGENT), headers=ping(**{"X-Clrk-Timeout-Ms": "soon"}), content=b"{}")
    assert response.status_code == 400 and "X-Clrk-Timeout-Ms" in response.json()["error"]["message"]
    assert shims[AGENT].requests == []


async def test_the_span_names_the_route_not_the_token(client: httpx.AsyncClient) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    from clrk.ingress import app as app_module

    original = app_module._tracer
    app_module._tracer = provider.get_tracer("test")
    try:
        await client.post(url(AGENT), headers=ping(), content=b"{}")
    finally:
        app_module._tracer = original
    (span,) = exporter.get_finished_spans()
    token = url(AGENT).rsplit("/", 1)[1]
    assert span.name == "POST /_clrk/schedules"
    assert span.attributes is not None and span.attributes["clrk.agent"] == AGENT
    assert token not in json.dumps(dict(span.attributes)) and token not in span.name


async def test_the_openapi_document_lists_the_route(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    route = paths["/_clrk/schedules/{namespace}/{agent}/{token}"]["post"]
    assert {p["name"] for p in route["parameters"]} == {"namespace", "agent", "token"}
    assert "404" in route["responses"] and "401" not in route["responses"]
