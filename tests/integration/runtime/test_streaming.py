"""Streamed answers (``Accept: text/event-stream``) through the shim's real HTTP app, both sandbox
kinds: stdout line by line while the agent runs, heartbeats in its silences, the outcome last."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import EventSource

from clrk_runtime.protocol.streams import HEARTBEAT, Outcome
from clrk_runtime.server.app import ShimApp
from clrk_runtime.server.functions import functions_app
from clrk_runtime.service.runtime import AgentRuntime
from clrk_runtime.settings import RuntimeSettings
from tests.support.runtime import KINDS, agent, sandbox_dirs, sandbox_processes, settings_for, shim_port, shim_process
from tests.support.streams import blocks, eventually, gate_dir, outcome, production_serving, read_events

STREAM = {"accept": "text/event-stream"}


@asynccontextmanager
async def shim(settings: RuntimeSettings) -> AsyncIterator[tuple[httpx.AsyncClient, AgentRuntime]]:
    runtime = AgentRuntime(settings)
    async with (
        production_serving(ShimApp(runtime)) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        yield client, runtime


@pytest.mark.parametrize("kind", KINDS)
async def test_the_first_line_arrives_while_the_agent_still_runs(kind: str, shim_root: Path) -> None:
    """The agent prints a line, then waits for a gate the test opens only once it got that line."""
    with gate_dir() as gates:
        gate = gates / "open"
        settings = settings_for(kind, shim_root, [agent("gated.sh"), str(gate)])
        async with shim(settings) as (client, runtime), client.stream("POST", "/", json={}, headers=STREAM) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            invocation_id = response.headers["x-clrk-invocation-id"]
            events = EventSource(response).aiter_sse()
            first = await anext(events)
            assert (first.event, first.id, first.data) == ("output", "1", "first")
            assert runtime.stats.pool.busy == 1, "the agent still runs"
            gate.touch()
            rest = [event async for event in events]
    assert [(e.event, e.id, e.data) for e in rest[:-1]] == [("output", "2", "second"), ("output", "3", "last")]
    assert rest[-1].event == "outcome" and rest[-1].id == "4"
    assert Outcome.parse(rest[-1].data) == Outcome(invocation_id, 200, 0, "text/plain; charset=utf-8")
    assert sandbox_processes() == []


async def test_heartbeats_fill_the_silences(shim_root: Path) -> None:
    """A silent agent: heartbeats come (two, before the test lets the agent speak), then its line
    and the outcome; the stream opens with a comment naming the invocation."""
    with gate_dir() as gates:
        gate = gates / "speak"
        settings = settings_for("plain", shim_root, [agent("silent.sh"), str(gate)], heartbeat_seconds=0.2)
        async with shim(settings) as (client, _), client.stream("POST", "/", json={}, headers=STREAM) as response:
            seen = []
            async for block in blocks(response):
                seen.append(block)
                if seen.count(HEARTBEAT.decode().strip()) == 2:
                    gate.touch()
    assert seen[0] == f": clrk {response.headers['x-clrk-invocation-id']}"
    assert seen[1:3] == [": keep-alive", ": keep-alive"]
    events = [b for b in seen[3:] if not b.startswith(":")]
    assert events[0] == "event: output\nid: 1\ndata: awake"
    assert events[1].startswith("event: outcome\nid: 2\ndata: ")
    assert len(events) == 2


OUTCOMES: list[tuple[list[str], dict[str, Any], int, str | None, int | None]] = [
    (["echo.sh"], {}, 200, None, 0),
    (["fail.sh"], {}, 502, "agent_failed", 3),
    (["stubborn.sh", "clrk-stream-marker"], {"timeout": 0.5}, 504, "deadline_exceeded", None),
]


@pytest.mark.parametrize(("command", "fields", "status", "error", "code"), OUTCOMES)
@pytest.mark.parametrize("kind", KINDS)
async def test_the_outcome_is_what_a_buffered_call_answers(
    kind: str,
    shim_root: Path,
    command: list[str],
    fields: dict[str, Any],
    status: int,
    error: str | None,
    code: int | None,
) -> None:
    settings = settings_for(kind, shim_root, [agent(command[0]), *command[1:]], **fields)
    async with shim(settings) as (client, runtime):
        buffered = await client.post("/", json={"k": 1})
        async with client.stream("POST", "/", json={"k": 1}, headers=STREAM) as response:
            raw = [block async for block in blocks(response)]
        assert sandbox_dirs(runtime) == []
    assert buffered.status_code == status
    assert response.status_code == 200, "once the agent runs, the answer is a stream"
    events = [block for block in raw if not block.startswith(":")]
    ended = Outcome.parse(events[-1].split("data: ", 1)[1])
    assert ended.status == status
    assert ended.invocation_id == response.headers["x-clrk-invocation-id"]
    assert ended.exit_code == code
    assert buffered.headers.get("x-clrk-exit-code") == (None if code is None else str(code))
    if error is None:
        assert ended.error is None and ended.content_type == buffered.headers["content-type"]
    else:
        assert ended.content_type is None
        assert ended.error is not None and ended.error["type"] == error
        assert {k: v for k, v in ended.error.items() if k != "invocationId"} == {
            k: v for k, v in buffered.json()["error"].items() if k != "invocationId"
        }
    assert not any("something went wrong" in block for block in raw), "stderr never travels"
    assert sandbox_processes() == []


@pytest.mark.parametrize("kind", KINDS)
async def test_past_the_stdout_cap_lines_stop_and_the_outcome_says_so(kind: str, shim_root: Path) -> None:
    command = ["/bin/sh", "-c", "cat >/dev/null; seq 1 200000"]
    settings = settings_for(kind, shim_root, command, stdout_cap=100_000)
    async with shim(settings) as (client, _), client.stream("POST", "/", json={}, headers=STREAM) as response:
        events = await read_events(response)
    ended = outcome(events)
    assert ended.status == 502 and ended.error is not None and ended.error["type"] == "response_too_large"
    assert ended.exit_code is None
    lines = [e.data for e in events[:-1]]
    assert all(e.event == "output" for e in events[:-1])
    assert lines == [str(n) for n in range(1, len(lines) + 1)], "the lines sent are the first ones, whole"
    assert sum(len(line) + 1 for line in lines) <= 100_000
    assert sandbox_processes() == []


# Invalid UTF-8, a CRLF line, a lone CR inside a line, and no final newline.
_AWKWARD = b"\xff\xfeok\r\nsplit\rhere\nlast"


@pytest.mark.parametrize("kind", KINDS)
async def test_the_outcome_body_is_the_exact_buffered_bytes(kind: str, shim_root: Path) -> None:
    printf = "".join(f"\\{byte:03o}" for byte in _AWKWARD)
    settings = settings_for(kind, shim_root, ["/bin/sh", "-c", f"cat >/dev/null; printf '{printf}'"])
    headers = {**STREAM, "x-clrk-outcome-body": "base64"}
    async with shim(settings) as (client, _):
        buffered = await client.post("/", json={})
        async with client.stream("POST", "/", json={}, headers=headers) as response:
            events = await read_events(response)
        async with client.stream("POST", "/", json={}, headers=STREAM) as plain:
            without = outcome(await read_events(plain))
    assert buffered.content == _AWKWARD
    ended = outcome(events)
    assert ended.body == _AWKWARD
    raw = json.loads(events[-1].data)["body"]
    assert base64.b64decode(raw) == _AWKWARD
    assert [e.data for e in events[:-1]] == ["\ufffd\ufffdok", "split\nhere", "last"]
    assert without.body is None, "only asked for, the body travels"


async def test_the_outcome_body_of_a_failure_is_the_error_body(shim_root: Path) -> None:
    settings = settings_for("plain", shim_root, [agent("fail.sh")])
    headers = {**STREAM, "x-clrk-outcome-body": "base64"}
    async with shim(settings) as (client, _), client.stream("POST", "/", json={}, headers=headers) as response:
        ended = outcome(await read_events(response))
    assert ended.body is not None
    assert json.loads(ended.body) == {"error": ended.error}


async def test_refusals_are_json_not_streams(shim_root: Path) -> None:
    """Before the agent runs, a refusal is the ordinary JSON error: a bad body, a bad
    X-Clrk-Outcome-Body, a body over the cap, and no capacity (one slot, no queue, busy)."""
    with gate_dir() as gates:
        gate = gates / "open"
        settings = settings_for(
            "plain", shim_root, [agent("gated.sh"), str(gate)], max_concurrency=1, queue_size=0, stdin_cap=1000
        )
        async with shim(settings) as (client, _):
            bad_json = await client.post("/", content=b"{no", headers={**STREAM, "content-type": "application/json"})
            bad_header = await client.post("/", json={}, headers={**STREAM, "x-clrk-outcome-body": "hex"})
            too_large = await client.post("/", content=b"x" * 1001, headers=STREAM)
            async with client.stream("POST", "/", json={}, headers=STREAM) as running:
                events = EventSource(running).aiter_sse()
                assert (await anext(events)).data == "first"
                busy = await client.post("/", json={}, headers=STREAM)
                gate.touch()
                rest = [event async for event in events]
    for answer, status, kind in [
        (bad_json, 400, "invalid_json"),
        (bad_header, 400, "invalid_outcome_body"),
        (too_large, 413, "request_too_large"),
        (busy, 503, "no_capacity"),
    ]:
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["error"]["type"] == kind
        assert answer.headers["x-clrk-invocation-id"] == answer.json()["error"]["invocationId"]
    assert "X-Clrk-Outcome-Body" in bad_header.json()["error"]["message"]
    assert busy.headers["retry-after"] == "1"
    assert Outcome.parse(rest[-1].data).status == 200


async def test_a_deadline_passed_in_the_queue_is_a_json_504(shim_root: Path) -> None:
    with gate_dir() as gates:
        gate = gates / "open"
        settings = settings_for("plain", shim_root, [agent("gated.sh"), str(gate)], max_concurrency=1)
        async with shim(settings) as (client, _), client.stream("POST", "/", json={}, headers=STREAM) as running:
            events = EventSource(running).aiter_sse()
            assert (await anext(events)).data == "first"
            queued = await client.post("/", json={}, headers={**STREAM, "x-clrk-timeout-ms": "200"})
            gate.touch()
            async for _ in events:
                pass
    assert queued.status_code == 504
    assert queued.headers["content-type"] == "application/json"
    assert queued.json()["error"]["type"] == "deadline_exceeded"


async def test_a_slow_reader_holds_no_sandbox(shim_root: Path) -> None:
    """The caller reads nothing until the agent has ended, though its 8 MB of lines are more than
    the sockets hold: the agent is not held back, its sandbox is gone by then, and every line
    still comes, then the outcome."""
    script = 'BEGIN { s = sprintf("%999s", ""); gsub(/ /, "x", s); for (i = 1; i <= 8000; i++) print i s }'
    settings = settings_for("plain", shim_root, ["/bin/sh", "-c", f"cat >/dev/null; awk '{script}'"])
    async with shim(settings) as (client, runtime), client.stream("POST", "/", json={}, headers=STREAM) as response:
        await eventually(lambda: runtime.stats.in_flight == 0)
        assert sandbox_dirs(runtime) == []
        events = await read_events(response)
    assert [e.data for e in events[:-1]] == [f"{n}{'x' * 999}" for n in range(1, 8001)]
    assert outcome(events).status == 200


async def test_functions_framework_streams_too(shim_root: Path) -> None:
    with gate_dir() as gates:
        gate = gates / "open"
        runtime = AgentRuntime(settings_for("plain", shim_root, [agent("gated.sh"), str(gate)]))
        async with (
            production_serving(functions_app(runtime)) as port,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
            client.stream("POST", "/", json={}, headers=STREAM) as response,
        ):
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            events = EventSource(response).aiter_sse()
            assert (await anext(events)).data == "first"
            assert runtime.stats.pool.busy == 1, "the agent still runs"
            gate.touch()
            rest = [event async for event in events]
            buffered = await client.post("/", json={})
    assert [e.data for e in rest[:-1]] == ["second", "last"]
    assert Outcome.parse(rest[-1].data).status == 200
    assert buffered.headers["x-clrk-exit-code"] == "0"


async def test_the_clrk_shim_command_streams(shim_root: Path) -> None:
    """The installed ``clrk-shim``, its heartbeat set through ``CLRK_HEARTBEAT_SECONDS``."""
    async with shim_process(
        shim_root,
        "--sandbox",
        "plain",
        "--",
        agent("ticker.sh"),
        "2",
        "0.3",
        env={"CLRK_HEARTBEAT_SECONDS": "0.1"},
    ) as process:
        port = await shim_port(process)
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
            client.stream("POST", "/", json={}, headers=STREAM) as response,
        ):
            raw = [block async for block in blocks(response)]
        process.terminate()
        assert await process.wait() == 0
    events = [block for block in raw if not block.startswith(":")]
    expected = [(1, "tick 1"), (2, "tick 2"), (3, "done")]
    assert events[:3] == [f"event: output\nid: {n}\ndata: {text}" for n, text in expected]
    assert Outcome.parse(events[3].split("data: ", 1)[1]).exit_code == 0
    assert ": keep-alive" in raw
