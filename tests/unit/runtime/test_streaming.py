"""Streamed answers without sandboxes: the events a run's output and answer become, the stream's
heartbeats and end, the exit-code header, and how a disconnect cancels the work."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest
from pydantic import ValidationError

from clrk_runtime.invocation.outcomes import CALLER_GONE, Response, RunResult, caller_gone, map_outcome
from clrk_runtime.invocation.streaming import EventWriter, OutputQueue, StreamedAnswer, outcome_of
from clrk_runtime.protocol.headers import EXIT_CODE_HEADER
from clrk_runtime.protocol.streams import HEARTBEAT, HEARTBEAT_S, Outcome
from clrk_runtime.server.app import Message, unless_gone
from clrk_runtime.settings import RuntimeSettings


def test_lines_become_events_numbered_from_one() -> None:
    writer = EventWriter("id-1")
    assert writer.opening() == b": clrk id-1\n\n"
    assert writer.output(b"hel") == b""
    assert writer.output(b"lo\r\nwor") == b"event: output\nid: 1\ndata: hello\n\n"
    assert writer.output(b"ld\nsplit\rhere\n") == (
        b"event: output\nid: 2\ndata: world\n\nevent: output\nid: 3\ndata: split\ndata: here\n\n"
    )
    assert writer.output(b"tail") == b""
    ended = writer.outcome(Outcome("id-1", 200, 0, "text/plain"))
    assert ended.startswith(b"event: output\nid: 4\ndata: tail\n\nevent: outcome\nid: 5\ndata: ")


def test_past_the_cap_the_cut_line_is_not_sent() -> None:
    writer = EventWriter("id-1")
    writer.output(b"whole\ncut sho")
    over = map_outcome(RunResult(0, b"", stdout_overflow=True), "id-1", 1)
    ended = writer.outcome(outcome_of(over, "id-1"))
    assert ended.startswith(b"event: outcome\nid: 2\n")
    assert b"cut sho" not in ended


def test_the_outcome_is_the_buffered_answer() -> None:
    ok = outcome_of(map_outcome(RunResult(0, b'{"a": 1}'), "id-1", 10), "id-1")
    assert ok == Outcome("id-1", 200, 0, "application/json")
    failed = map_outcome(RunResult(3, b"partial"), "id-2", 10)
    outcome = outcome_of(failed, "id-2", with_body=True)
    assert (outcome.status, outcome.exit_code, outcome.content_type) == (502, 3, None)
    assert outcome.error == {
        "type": "agent_failed",
        "message": "the agent exited with code 3",
        "invocationId": "id-2",
        "exitCode": 3,
    }
    assert outcome.body == failed.body
    late = outcome_of(map_outcome(RunResult(-9, timed_out=True), "id-3", 2), "id-3")
    assert (late.status, late.exit_code) == (504, None)
    assert late.error is not None and late.error["type"] == "deadline_exceeded"


def test_a_declared_status_is_the_agents_answer_not_an_error() -> None:
    declared = map_outcome(RunResult(0, b"nope", response_headers="Status: 404\nContent-Type: text/x\n"), "id", 1)
    assert outcome_of(declared, "id") == Outcome("id", 404, 0, "text/x")


@pytest.mark.parametrize(
    ("result", "header"),
    [
        (RunResult(0, b"x"), "0"),
        (RunResult(3), "3"),
        (RunResult(-signal.SIGXFSZ), str(-signal.SIGXFSZ)),
        (RunResult(-9, timed_out=True), None),
        (RunResult(0, stdout_overflow=True), None),
    ],
)
def test_the_exit_code_header_says_how_the_agent_ended_by_itself(result: RunResult, header: str | None) -> None:
    assert map_outcome(result, "id", 1).header(EXIT_CODE_HEADER) == header


def test_errors_carry_their_error_object() -> None:
    gone = caller_gone("id-9")
    assert gone.status == CALLER_GONE
    assert gone.error is not None and gone.error["type"] == "caller_gone"
    assert map_outcome(RunResult(0, b"x"), "id", 1).error is None


def test_heartbeat_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RuntimeSettings().heartbeat_seconds == HEARTBEAT_S
    monkeypatch.setenv("CLRK_HEARTBEAT_SECONDS", "0.5")
    assert RuntimeSettings().heartbeat_seconds == 0.5
    with pytest.raises(ValidationError, match="heartbeat_seconds"):
        RuntimeSettings(heartbeat_seconds=0)


async def test_a_stream_beats_in_silence_then_sends_lines_and_the_outcome() -> None:
    release = asyncio.Event()
    queue = OutputQueue()

    async def run() -> Response:
        await release.wait()
        queue.put(b"late\n")
        return map_outcome(RunResult(0, b"late\n"), "id-1", 1)

    answer = StreamedAnswer("id-1", asyncio.ensure_future(run()), queue, heartbeat=0.01)
    assert answer.status == 200
    assert ("X-Clrk-Invocation-Id", "id-1") in answer.headers
    events = aiter(answer)
    assert await anext(events) == b": clrk id-1\n\n"
    assert await anext(events) == HEARTBEAT  # nothing was put: the run waits for us
    assert await anext(events) == HEARTBEAT
    release.set()
    rest = [data async for data in events if data != HEARTBEAT]
    assert rest[0] == b"event: output\nid: 1\ndata: late\n\n"
    assert Outcome.parse(rest[1].split(b"data: ", 1)[1].decode()) == Outcome(
        "id-1", 200, 0, "text/plain; charset=utf-8"
    )
    assert len(rest) == 2
    await answer.aclose()


async def test_closing_a_stream_early_cancels_its_run() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def run() -> Response:
        try:
            started.set()
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        raise AssertionError("unreachable")

    task = asyncio.ensure_future(run())
    answer = StreamedAnswer("id-1", task, OutputQueue(), heartbeat=10)
    assert await anext(aiter(answer)) == b": clrk id-1\n\n"
    await started.wait()
    await answer.aclose()
    assert cancelled.is_set() and task.cancelled()


def _receiver(*messages: Message, then: asyncio.Event | None = None) -> Any:
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            await then.wait()
        return {"type": "http.disconnect"}

    return receive


async def test_a_disconnect_cancels_the_work() -> None:
    gone = asyncio.Event()
    ended = asyncio.Event()

    async def work() -> str:
        try:
            gone.set()  # the caller leaves once the work runs
            await asyncio.Event().wait()
        finally:
            ended.set()
        return "never"

    assert await unless_gone(_receiver(then=gone), work()) is None
    assert ended.is_set(), "the work was over before unless_gone returned"


async def test_work_that_ends_first_is_the_answer() -> None:
    async def work() -> str:
        return "done"

    assert await unless_gone(_receiver(then=asyncio.Event()), work()) == "done"


async def test_a_server_that_cannot_tell_lets_the_work_run() -> None:
    """A receive that answers something else than a disconnect (a harness replaying the body)."""
    release = asyncio.Event()

    async def work() -> str:
        await release.wait()
        return "done"

    async def later() -> None:
        await asyncio.sleep(0)
        release.set()

    replay = {"type": "http.request", "body": b"{}", "more_body": False}
    _, answer = await asyncio.gather(later(), unless_gone(_receiver(replay), work()))
    assert answer == "done"
