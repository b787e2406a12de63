"""The TUI's output pane, driven by Textual's pilot: a running invocation's stdout appears while it
runs (the agent waits on a gate file the test creates only once the pane showed its first line),
a reload's new runtime is watched too, and Enter on a finished request shows its lines."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, RichLog

from clrk.dev.logs import LogBuffer
from clrk.dev.serving import DevServer
from clrk.dev.settings import DevSettings
from clrk.dev.tui import DevApp
from clrk.ingress import InvocationRecord
from clrk.telemetry.spans import SpanStore
from clrk_runtime.protocol.headers import INVOCATION_HEADER
from clrk_runtime.service.runtime import AgentRuntime
from clrk_runtime.settings import RuntimeSettings

WAIT = 20.0
"""Seconds a pane may take to show what the test waits for (it polls; never a sleep to assert)."""


@pytest.fixture
def gate() -> Iterator[Path]:
    """A folder the sandbox's user can read (pytest's tmp_path is 0700); ``gate/open`` opens it."""
    folder = Path(tempfile.mkdtemp(prefix="clrk-tui-gate-"))
    folder.chmod(0o755)
    yield folder / "open"
    shutil.rmtree(folder, ignore_errors=True)


def _gated_agent(ref: str, gate: Path) -> AgentRuntime:
    script = f"echo first line; while [ ! -e {gate} ]; do sleep 0.01; done; echo second line"
    return AgentRuntime(RuntimeSettings(command=["sh", "-c", script], agent=ref, sandbox="plain", timeout=WAIT))


def _output(app: DevApp) -> list[str]:
    return [str(line.text) for line in app.query_one("#output", RichLog).lines]


async def _until(pilot: Pilot[None], check: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"not within {WAIT}s: {what}"
        await pilot.pause(0.02)


@asynccontextmanager
async def _running(server: DevServer) -> AsyncIterator[tuple[DevApp, Pilot[None]]]:
    app = DevApp(server, SpanStore(), LogBuffer(), [])
    async with app.run_test() as pilot:
        await pilot.pause()
        yield app, pilot
        await pilot.press("q")


async def test_a_running_invocations_output_shows_as_it_is_written(gate: Path) -> None:
    server = DevServer(DevSettings(apply=["unused"]), environ={})
    runtime = _gated_agent("default/gated", gate)
    await runtime.start()
    server.runtimes["default/gated"] = runtime
    try:
        async with _running(server) as (app, pilot):
            call = asyncio.create_task(runtime.handle({"content-type": "application/json"}, b"{}"))
            await _until(pilot, lambda: "first line" in _output(app), "the first line in the output pane")
            assert not call.done(), "shown while the agent still runs"
            title = str(app.query_one("#output", RichLog).border_title)
            assert title.startswith("output: default/gated ") and title.endswith("(running)")
            gate.touch()
            response = await asyncio.wait_for(call, WAIT)
            assert response.status == 200
            await _until(pilot, lambda: "second line" in _output(app), "the second line")
            assert _output(app) == ["first line", "second line"]
            await _until(
                pilot,
                lambda: str(app.query_one("#output", RichLog).border_title).endswith("(ended)"),
                "the pane saying the run ended",
            )
    finally:
        await runtime.stop()


async def test_the_runtime_a_reload_starts_is_watched_and_the_old_one_let_go(gate: Path) -> None:
    server = DevServer(DevSettings(apply=["unused"]), environ={})
    first = AgentRuntime(RuntimeSettings(command=["cat"], agent="default/bot", sandbox="plain"))
    second = _gated_agent("default/bot", gate)
    await first.start()
    await second.start()
    server.runtimes["default/bot"] = first
    try:
        async with _running(server) as (app, pilot):
            server.runtimes = {"default/bot": second}  # what a reload does
            app.refresh_output()  # the next look at the output, made now rather than at its interval
            gate.touch()
            response = await second.handle({"content-type": "application/json"}, b"{}")
            assert response.status == 200
            await _until(pilot, lambda: _output(app) == ["first line", "second line"], "the new runtime's lines")
            await first.handle({"content-type": "application/json"}, b'{"from": "the old one"}')
            await pilot.pause()
            assert "the old one" not in " ".join(_output(app)), "the replaced runtime is no longer watched"
    finally:
        await first.stop()
        await second.stop()


async def test_enter_on_a_request_shows_its_lines_and_f_follows_again(gate: Path) -> None:
    server = DevServer(DevSettings(apply=["unused"]), environ={})
    runtime = AgentRuntime(RuntimeSettings(command=["sh", "-c", "cat; echo"], agent="default/cat", sandbox="plain"))
    await runtime.start()
    server.runtimes["default/cat"] = runtime
    try:
        async with _running(server) as (app, pilot):
            ids = []
            for word in ("alpha", "beta"):
                response = await runtime.handle({"content-type": "application/json"}, f'{{"w": "{word}"}}'.encode())
                invocation = response.header(INVOCATION_HEADER)
                assert invocation
                ids.append(invocation)
                server.records.append(InvocationRecord(invocation, "default/cat", 200, 0.01, None))
            await _until(pilot, lambda: '"beta"' in " ".join(_output(app)), "the last run's lines")
            app.refresh_panes()
            requests = app.query_one("#requests", DataTable)
            requests.focus()
            requests.move_cursor(row=1)  # newest first: row 1 is alpha's
            await pilot.press("enter")
            await _until(pilot, lambda: '"alpha"' in " ".join(_output(app)), "alpha's lines once chosen")
            assert '"beta"' not in " ".join(_output(app))
            await pilot.press("f")
            await _until(pilot, lambda: '"beta"' in " ".join(_output(app)), "the latest again after f")
    finally:
        await runtime.stop()
