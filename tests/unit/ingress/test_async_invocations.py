"""Async invocations through the ingress app in-process: 202, status, result, events, cancel,
who sees what, and the runner's handling of a shim that is busy, refuses or goes away.

The runs live in a real SQLite store; the shim is a small scripted ASGI app speaking the stream
contract of :mod:`clrk_runtime.protocol.streams` (the real shim is behind the ingress in
tests/integration/dev/test_async.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from httpx_sse import EventSource, ServerSentEvent

from clrk.ingress import (
    AgentTarget,
    AsyncRuns,
    CallerKey,
    CallerKeys,
    FileRunStore,
    IngressSettings,
    InProcessForwarder,
    InvocationRecord,
    LocalDispatcher,
    Runner,
    RunRecord,
    Usage,
    create_app,
    key_digest,
)
from clrk.ingress.running import RunLost
from clrk_runtime.protocol.errors import error_body
from clrk_runtime.protocol.ids import new_invocation_id
from clrk_runtime.protocol.invocations import Status
from clrk_runtime.protocol.streams import EVENT_STREAM, Outcome, encode_event, opening
from tests.support.serving import uvicorn_serving
from tests.support.streams import blocks

AGENT = "default/echo"
ANSWER = b'{"filter":".[]","output":["carol","alice"]}\n'
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Plan:
    """What the scripted shim does with one request."""

    kind: str = "stream"
    """``stream`` (lines, then the outcome), ``busy`` (503), ``refuse`` (401), ``lost`` (lines,
    then the stream ends without an outcome)."""
    lines: list[str] = field(default_factory=lambda: ["first", "second"])
    gate: asyncio.Event | None = None
    """Held after the lines, before the outcome."""


class ScriptedShim:
    def __init__(self) -> None:
        self.plans: list[Plan] = []
        self.requests: list[dict[str, str]] = []
        self.streaming = asyncio.Event()
        self.caller_left = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.requests.append(headers)
        plan = self.plans.pop(0) if self.plans else Plan()
        invocation_id = headers["x-clrk-invocation-id"]
        if plan.kind in ("busy", "refuse"):
            status, kind = (503, "no_capacity") if plan.kind == "busy" else (401, "unsigned")
            extra = [(b"retry-after", b"1")] if status == 503 else []
            start = {"type": "http.response.start", "status": status}
            await send({**start, "headers": [(b"content-type", b"application/json"), *extra]})
            await send({"type": "http.response.body", "body": error_body(kind, "scripted", invocation_id)})
            return
        head = [(b"content-type", f"{EVENT_STREAM}; charset=utf-8".encode())]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        await send({"type": "http.response.body", "body": opening(invocation_id), "more_body": True})
        chunk = b"".join(encode_event("output", line, n) for n, line in enumerate(plan.lines, 1))
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        self.streaming.set()
        if plan.gate is not None:
            waiting = asyncio.create_task(plan.gate.wait())
            leaving = asyncio.ensure_future(receive())
            done, _ = await asyncio.wait({waiting, leaving}, return_when=asyncio.FIRST_COMPLETED)
            for task in (waiting, leaving):
                task.cancel()
            if leaving in done:
                self.caller_left.set()
                return
        if plan.kind == "lost":
            await send({"type": "http.response.body", "body": b""})
            return
        outcome = Outcome(invocation_id, 200, 0, "application/json", body=ANSWER)
        await send({"type": "http.response.body", "body": outcome.encode(len(plan.lines) + 1)})


@dataclass
class Harness:
    client: httpx.AsyncClient
    store: FileRunStore
    shim: ScriptedShim
    runner: Runner
    ended: list[RunRecord]
    finished: list[InvocationRecord]


KEYS = {"alice": "alice-key", "bob": "bob-key"}


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    store = await FileRunStore.open(tmp_path / "runs.sqlite3", retention_s=60, max_result_bytes_total=1 << 20)
    shim = ScriptedShim()
    forwarder = InProcessForwarder()
    forwarder.set_apps({AGENT: (AgentTarget(AGENT, 30.0), shim)})
    ended: list[RunRecord] = []

    async def usage(invocation_id: str) -> Usage:
        return Usage(input_tokens=12, output_tokens=34, model_calls=1)

    runner = Runner(store, forwarder, callbacks=None, usage=usage, retention_s=60, poll_s=0.05, on_end=ended.append)
    dispatcher = LocalDispatcher(runner, store)
    await dispatcher.start()
    callers = CallerKeys([CallerKey(f"default/{n}", key_digest(k), frozenset({AGENT})) for n, k in KEYS.items()])
    finished: list[InvocationRecord] = []
    runs = AsyncRuns(store, dispatcher, retention_s=60, heartbeat_s=0.2, allow_loopback_callbacks=True)
    app = create_app(forwarder, callers, IngressSettings(), finished.append, runs=runs)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress") as client:
        yield Harness(client, store, shim, runner, ended, finished)
    await dispatcher.aclose()
    await store.aclose()


def _auth(caller: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[caller]}"}


async def _accept(h: Harness, caller: str = "alice", **headers: str) -> str:
    response = await h.client.post(
        "/",
        content=b'{"want": "names"}',
        headers={"X-Clrk-TaskAgent": AGENT, "Prefer": "respond-async", "content-type": "application/json"}
        | _auth(caller)
        | headers,
    )
    assert response.status_code == 202, response.text
    invocation_id = response.headers["x-clrk-invocation-id"]
    assert response.headers["location"] == f"/invocations/{invocation_id}"
    assert response.headers["preference-applied"] == "respond-async"
    assert response.json()["invocationId"] == invocation_id
    return invocation_id


async def _until(h: Harness, invocation_id: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The status document, once ``done`` holds of it (polled; AssertionError after 20 s)."""
    deadline = time.monotonic() + 20
    while True:
        document: dict[str, Any] = (await h.client.get(f"/invocations/{invocation_id}", headers=_auth())).json()
        if done(document):
            return document
        assert time.monotonic() < deadline, f"{invocation_id}: not there within 20 s: {document}"
        await asyncio.sleep(0.02)


async def _final(h: Harness, invocation_id: str) -> dict[str, Any]:
    return await _until(h, invocation_id, lambda d: d["status"] not in ("queued", "running"))


async def _events(h: Harness, invocation_id: str, caller: str = "alice") -> list[ServerSentEvent]:
    response = await h.client.get(f"/invocations/{invocation_id}/events", headers=_auth(caller))
    assert response.headers["content-type"].startswith(EVENT_STREAM)
    return [event async for event in EventSource(response).aiter_sse()]


async def test_accepted_at_once_then_run_to_the_stored_answer(harness: Harness) -> None:
    h = harness
    gate = asyncio.Event()
    h.shim.plans.append(Plan(gate=gate))
    invocation_id = await _accept(h)
    await asyncio.wait_for(h.shim.streaming.wait(), 10)
    running = await _until(h, invocation_id, lambda d: d["startedAt"] is not None)
    assert running["status"] == "running", "started once the shim streams: the agent has its sandbox"
    not_yet = await h.client.get(f"/invocations/{invocation_id}/result", headers=_auth())
    assert not_yet.status_code == 404 and not_yet.json()["error"]["type"] == "result_not_ready"
    assert h.finished == [], "the 202 is not an end: the egress credentials must live on"
    gate.set()
    document = await _final(h, invocation_id)
    assert document["status"] == "succeeded" and document["httpStatus"] == 200 and document["exitCode"] == 0
    assert document["usage"]["inputTokens"] == 12 and document["usage"]["modelCalls"] == 1
    assert document["attempts"] == 1 and document["expiresAt"] is not None
    result = await h.client.get(f"/invocations/{invocation_id}/result", headers=_auth())
    assert result.status_code == 200 and result.content == ANSWER
    assert result.headers["content-type"] == "application/json"
    assert result.headers["x-clrk-invocation-status"] == "succeeded"
    assert [r.invocation_id for r in h.ended] == [invocation_id], "told once, when it ended"
    sent = h.shim.requests[0]
    assert sent["accept"] == EVENT_STREAM and sent["x-clrk-outcome-body"] == "base64"
    assert sent["content-type"] == "application/cloudevents+json" and int(sent["x-clrk-timeout-ms"]) <= 30000


async def test_events_give_status_every_line_then_the_outcome(harness: Harness) -> None:
    h = harness
    h.shim.plans.append(Plan(lines=["one", "two", "three"]))
    invocation_id = await _accept(h)
    await _final(h, invocation_id)
    events = await _events(h, invocation_id)
    assert events[0].event == "status"
    assert [(e.id, e.data) for e in events if e.event == "output"] == [("1", "one"), ("2", "two"), ("3", "three")]
    assert events[-1].event == "outcome"
    outcome = Outcome.parse(events[-1].data)
    assert (outcome.status, outcome.exit_code, outcome.body) == (200, 0, None)
    resumed = await h.client.get(
        f"/invocations/{invocation_id}/events",
        headers=_auth() | {"Last-Event-ID": "2", "X-Clrk-Outcome-Body": "base64"},
    )
    later = [e async for e in EventSource(resumed).aiter_sse()]
    assert [e.data for e in later if e.event == "output"] == ["three"]
    assert base64.b64decode(json.loads(later[-1].data)["body"]) == ANSWER


async def test_another_callers_run_is_unknown_as_is_garbage(harness: Harness) -> None:
    h = harness
    invocation_id = await _accept(h, "alice")
    await _final(h, invocation_id)
    for path in ("", "/result", "/events"):
        response = await h.client.get(f"/invocations/{invocation_id}{path}", headers=_auth("bob"))
        assert response.status_code == 404 and response.json()["error"]["type"] == "unknown_invocation"
    gone = await h.client.delete(f"/invocations/{invocation_id}", headers=_auth("bob"))
    assert gone.status_code == 404
    unknown = await h.client.get(f"/invocations/{new_invocation_id()}", headers=_auth())
    assert (
        unknown.status_code == 404
        and unknown.json() == (await h.client.get(f"/invocations/{invocation_id}", headers=_auth("bob"))).json()
    )
    garbage = "x" * 500
    response = await h.client.get(f"/invocations/{garbage}", headers=_auth())
    assert response.status_code == 404 and garbage not in response.text
    assert (await h.client.get(f"/invocations/{invocation_id}")).status_code == 401, "a key is asked"
    assert (await h.client.put(f"/invocations/{invocation_id}", headers=_auth())).status_code == 405


async def test_delete_cancels_a_running_run_once(harness: Harness) -> None:
    h = harness
    h.shim.plans.append(Plan(gate=asyncio.Event()))  # never opened
    invocation_id = await _accept(h)
    await asyncio.wait_for(h.shim.streaming.wait(), 10)
    cancelled = await h.client.delete(f"/invocations/{invocation_id}", headers=_auth())
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    await asyncio.wait_for(h.shim.caller_left.wait(), 10)  # the shim heard its caller leave
    again = await h.client.delete(f"/invocations/{invocation_id}", headers=_auth())
    assert again.status_code == 409 and again.json()["error"]["type"] == "already_finished"
    result = await h.client.get(f"/invocations/{invocation_id}/result", headers=_auth())
    assert result.status_code == 409 and result.json()["error"]["type"] == "invocation_cancelled"
    events = await _events(h, invocation_id)
    assert [e.data for e in events if e.event == "output"] == ["first", "second"]
    assert Outcome.parse(events[-1].data).error == {
        "type": "cancelled",
        "message": "cancelled by DELETE /invocations/<id>",
    }
    assert [r.status for r in h.ended] == [Status.CANCELLED]


async def test_a_busy_pool_is_waited_out_and_a_refusal_is_the_result(harness: Harness) -> None:
    h = harness
    h.shim.plans += [Plan("busy"), Plan()]
    waited = await _accept(h)
    assert (await _final(h, waited))["status"] == "succeeded"
    assert len(h.shim.requests) == 2, "the 503 was tried again"
    h.shim.plans.append(Plan("refuse"))
    refused = await _accept(h)
    document = await _final(h, refused)
    assert document["status"] == "failed" and document["httpStatus"] == 401
    result = await h.client.get(f"/invocations/{refused}/result", headers=_auth())
    assert result.status_code == 401 and result.json()["error"]["type"] == "unsigned"


async def test_a_shim_gone_mid_stream_fails_the_run_or_raises(harness: Harness) -> None:
    h = harness
    h.shim.plans.append(Plan("lost"))
    invocation_id = await _accept(h)
    document = await _final(h, invocation_id)
    assert document["status"] == "failed" and document["error"]["type"] == "agent_unavailable"
    assert document["httpStatus"] == 503
    record = RunRecord(new_invocation_id(), AGENT, None, b"{}", 30.0, time.time())
    await h.store.create(record)
    h.shim.plans.append(Plan("lost"))
    raising = Runner(h.store, _forwarder(h.shim), callbacks=None, on_lost="raise")
    with pytest.raises(RunLost):
        await raising.execute(record.invocation_id)
    stored = await h.store.get(record.invocation_id)
    assert stored is not None and stored.status is Status.RUNNING, "left for the Broker to deliver again"
    resumed = await raising.execute(record.invocation_id, resume=True)
    assert resumed is not None and resumed.status is Status.SUCCEEDED and resumed.attempts == 2
    assert await raising.execute(record.invocation_id, resume=True) is None, "a final run is not run again"


def _forwarder(shim: ScriptedShim) -> InProcessForwarder:
    forwarder = InProcessForwarder()
    forwarder.set_apps({AGENT: (AgentTarget(AGENT, 30.0), shim)})
    return forwarder


async def test_bad_callback_urls_are_refused_naming_the_header(harness: Harness) -> None:
    h = harness
    response = await h.client.post(
        "/",
        content=b"{}",
        headers={
            "X-Clrk-TaskAgent": AGENT,
            "Prefer": "respond-async",
            "X-Clrk-Callback-Url": "http://169.254.169.254/latest",
        }
        | _auth(),
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_callback_url" and "X-Clrk-Callback-Url" in error["message"]
    assert h.shim.requests == [], "nothing ran"


async def test_without_async_runs_the_preference_is_ignored(tmp_path: Path) -> None:
    shim = ScriptedShim()
    app = create_app(_forwarder(shim), CallerKeys(open_mode=True), IngressSettings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress") as client:
        response = await client.post("/", content=b"{}", headers={"X-Clrk-TaskAgent": AGENT, "Prefer": "respond-async"})
        assert response.status_code == 200 and "preference-applied" not in response.headers
        assert (await client.get(f"/invocations/{new_invocation_id()}")).status_code == 404


async def test_stop_puts_a_waiting_run_back_and_marks_a_started_one_interrupted(tmp_path: Path) -> None:
    store = await FileRunStore.open(tmp_path / "runs.sqlite3", retention_s=60, max_result_bytes_total=1 << 20)
    shim = ScriptedShim()
    shim.plans.append(Plan(gate=asyncio.Event()))
    runner = Runner(store, _forwarder(shim), callbacks=None, poll_s=0.05)
    dispatcher = LocalDispatcher(runner, store)
    await dispatcher.start()
    started = RunRecord(new_invocation_id(), AGENT, None, b"{}", 30.0, time.time())
    await store.create(started)
    await dispatcher.submit(started)
    await asyncio.wait_for(shim.streaming.wait(), 10)
    shim.plans += [Plan("busy")] * 100
    never = RunRecord(new_invocation_id(), AGENT, None, b"{}", 30.0, time.time())
    await store.create(never)
    await dispatcher.submit(never)
    while len(shim.requests) < 2:  # refused for capacity: claimed, waiting, never reached its agent
        await asyncio.sleep(0.01)
    await dispatcher.aclose()
    shim.plans.clear()
    cut = await store.get(started.invocation_id)
    assert cut is not None and cut.status is Status.FAILED and cut.error is not None
    assert cut.error["type"] == "interrupted"
    back = await store.get(never.invocation_id)
    assert back is not None and back.status is Status.QUEUED
    again = LocalDispatcher(Runner(store, _forwarder(shim), callbacks=None), store)
    await again.start()  # a restart runs it
    try:
        deadline = time.monotonic() + 10
        while (current := await store.get(never.invocation_id)) and not current.final:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert current is not None and current.status is Status.SUCCEEDED
    finally:
        await again.aclose()
        await store.aclose()


async def test_events_over_a_socket_beat_in_silence_and_end_when_the_server_stops(tmp_path: Path) -> None:
    """A real socket (httpx's ASGI transport buffers a stream): a heartbeat comes while the agent
    is silent, before its gate opens; a stop ends the stream of a run that goes on."""
    store = await FileRunStore.open(tmp_path / "runs.sqlite3", retention_s=60, max_result_bytes_total=1 << 20)
    shim = ScriptedShim()
    gate = asyncio.Event()
    shim.plans += [Plan(gate=gate), Plan(gate=asyncio.Event())]
    runner = Runner(store, _forwarder(shim), callbacks=None, poll_s=0.05)
    dispatcher = LocalDispatcher(runner, store)
    await dispatcher.start()
    runs = AsyncRuns(store, dispatcher, heartbeat_s=0.05)
    app = create_app(_forwarder(shim), CallerKeys(open_mode=True), IngressSettings(), runs=runs)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning")
    try:
        async with uvicorn_serving(config) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            posted = await client.post(
                "/", content=b"{}", headers={"X-Clrk-TaskAgent": AGENT, "Prefer": "respond-async"}
            )
            invocation_id = posted.headers["x-clrk-invocation-id"]
            seen: list[str] = []
            async with client.stream("GET", f"/invocations/{invocation_id}/events", timeout=20) as response:
                async for block in blocks(response):
                    seen.append(block)
                    if block == ": keep-alive" and "data: second" in "\n".join(seen):
                        gate.set()  # silence was beaten while the agent waited
            assert seen[0] == f": clrk {invocation_id}" and seen[-1].startswith("event: outcome")
            assert seen.index(": keep-alive") < len(seen) - 1
            posted = await client.post(
                "/", content=b"{}", headers={"X-Clrk-TaskAgent": AGENT, "Prefer": "respond-async"}
            )
            invocation_id = posted.headers["x-clrk-invocation-id"]
            async with client.stream("GET", f"/invocations/{invocation_id}/events", timeout=20) as response:
                ended: list[str] = []
                async for block in blocks(response):
                    ended.append(block)
                    if block.startswith("event: output"):
                        runs.stopping.set()
            assert not any(b.startswith("event: outcome") for b in ended), "cut: its reader comes back later"
    finally:
        await dispatcher.aclose()
        await store.aclose()
