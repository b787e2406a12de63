"""A caller that leaves before its answer takes its invocation with it: the agent's whole tree
killed, the sandbox removed, the slot freed, a log line saying so. Buffered and streamed calls,
both sandbox kinds, both HTTP implementations, both servers; and a cancelled ``handle``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from clrk_runtime.server.app import ShimApp
from clrk_runtime.server.functions import functions_app
from clrk_runtime.server.protocols import httptools_installed
from clrk_runtime.service.runtime import AgentRuntime
from tests.support.processes import live_processes
from tests.support.runtime import KINDS, SANDBOX_RANGE, agent, sandbox_dirs, sandbox_processes, settings_for
from tests.support.streams import eventually, gate_dir, production_serving

IMPLEMENTATIONS = [
    "h11",
    pytest.param("httptools", marks=pytest.mark.skipif(not httptools_installed(), reason="no httptools")),
]
KILLED = "caller went away; killed"


def _agent_running() -> bool:
    """The gated agent runs (its loop, as a sandbox uid)."""
    return any("gated.sh" in cmdline for cmdline in live_processes(SANDBOX_RANGE).values())


@asynccontextmanager
async def _connected(port: int, stream: bool) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A raw connection with one POST sent on it (its body whole); closed at the end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    accept = b"Accept: text/event-stream\r\n" if stream else b""
    writer.write(b"POST / HTTP/1.1\r\nHost: shim\r\nContent-Type: application/json\r\nContent-Length: 2\r\n")
    writer.write(accept + b"\r\n{}")
    await writer.drain()
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _leave_mid_run(port: int, stream: bool) -> None:
    """Call, wait until the agent runs (streamed: until its first line arrived), hang up."""
    async with _connected(port, stream) as (reader, _):
        if stream:
            received = b""
            while b"data: first" not in received:
                chunk = await reader.read(4096)
                assert chunk, f"the shim closed first: {received!r}"
                received += chunk
            assert received.startswith(b"HTTP/1.1 200 ")
        else:
            await eventually(_agent_running)


async def _assert_killed(runtime: AgentRuntime, caplog: pytest.LogCaptureFixture, before: list[int]) -> None:
    # Logged once the tree is dead and the sandbox removed: everything holds from then on.
    await eventually(lambda: KILLED in caplog.text)
    assert sandbox_processes() == before
    assert sandbox_dirs(runtime) == []
    assert runtime.stats.pool.busy == 0 and runtime.stats.in_flight == 0
    [line] = [r.getMessage() for r in caplog.records if KILLED in r.getMessage()]
    assert line.startswith("[") and line.endswith(f"] {KILLED}")


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_caller_that_hangs_up_kills_the_run(
    kind: str, stream: bool, implementation: Any, shim_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The agent leaves a child that ignores SIGTERM, then waits for a gate nobody opens."""
    before = sandbox_processes()
    with gate_dir() as gates:
        settings = settings_for(kind, shim_root, [agent("gated.sh"), str(gates / "never"), "7"], timeout=60)
        runtime = AgentRuntime(settings)
        async with production_serving(ShimApp(runtime), implementation) as port:
            await _leave_mid_run(port, stream)
            await _assert_killed(runtime, caplog, before)
    assert list(shim_root.iterdir()) == []


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
async def test_through_functions_framework_too(stream: bool, shim_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    before = sandbox_processes()
    with gate_dir() as gates:
        settings = settings_for("plain", shim_root, [agent("gated.sh"), str(gates / "never"), "7"], timeout=60)
        runtime = AgentRuntime(settings)
        async with production_serving(functions_app(runtime)) as port:
            await _leave_mid_run(port, stream)
            await _assert_killed(runtime, caplog, before)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_cancelled_handle_kills_the_tree_and_removes_the_sandbox(
    kind: str, shim_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What ``clrk dev`` does in-process: the task awaiting ``handle`` is cancelled."""
    before = sandbox_processes()
    with gate_dir() as gates:
        settings = settings_for(kind, shim_root, [agent("gated.sh"), str(gates / "never"), "7"], timeout=60)
        async with AgentRuntime(settings) as runtime:
            call = asyncio.ensure_future(runtime.handle({}, b"{}"))
            await eventually(_agent_running)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            # Done before the cancellation reached us: nothing to wait for.
            assert sandbox_processes() == before
            assert sandbox_dirs(runtime) == []
            assert runtime.stats.pool.busy == 0 and runtime.stats.in_flight == 0
            assert KILLED in caplog.text
    assert list(shim_root.iterdir()) == []


async def test_a_caller_that_leaves_while_queued_runs_nothing(
    shim_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with gate_dir() as gates:
        gate = gates / "open"
        settings = settings_for("plain", shim_root, [agent("gated.sh"), str(gate)], max_concurrency=1, timeout=60)
        runtime = AgentRuntime(settings)
        async with production_serving(ShimApp(runtime)) as port, _connected(port, stream=False):
            await eventually(_agent_running)
            async with _connected(port, stream=True):
                await eventually(lambda: runtime.stats.pool.queued == 1)
            await eventually(lambda: "caller went away while queued" in caplog.text)
            assert runtime.stats.pool.queued == 0 and runtime.stats.pool.busy == 1
            gate.touch()
            await eventually(lambda: runtime.stats.in_flight == 0)  # answered before the hang-up
    assert KILLED not in caplog.text


@pytest.mark.parametrize("kind", KINDS)
async def test_a_second_cancellation_while_closing_leaves_nothing_either(kind: str, shim_root: Path) -> None:
    before = sandbox_processes()
    with gate_dir() as gates:
        settings = settings_for(kind, shim_root, [agent("gated.sh"), str(gates / "never"), "7"], timeout=60)
        async with AgentRuntime(settings) as runtime:
            call = asyncio.ensure_future(runtime.handle({}, b"{}"))
            await eventually(_agent_running)
            call.cancel()
            for _ in range(3):  # into the sandbox's closing, which waits on the spawner
                await asyncio.sleep(0)
            assert not call.done()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert sandbox_processes() == before
            assert sandbox_dirs(runtime) == []
            assert runtime.stats.pool.busy == 0 and runtime.stats.in_flight == 0
    assert list(shim_root.iterdir()) == []
