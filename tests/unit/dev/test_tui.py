"""The clrk dev TUI, driven by Textual's pilot: each pane shows what the server holds."""

from __future__ import annotations

import logging

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from textual.widgets import DataTable, RichLog, Static

from clrk.dev.logs import LogBuffer
from clrk.dev.serving import DevServer
from clrk.dev.settings import DevSettings
from clrk.dev.tui import DevApp, warm_start_cell
from clrk.ingress import InvocationRecord
from clrk.telemetry.spans import SpanStore
from clrk_runtime.service.runtime import AgentRuntime
from clrk_runtime.service.warming import WarmStartStats
from clrk_runtime.settings import RuntimeSettings


async def test_panes_show_agents_requests_traces_and_logs() -> None:
    server = DevServer(DevSettings(apply=["unused"]), environ={})
    runtime = AgentRuntime(RuntimeSettings(command=["cat"], agent="default/cat", sandbox="plain", warm_pool=1))
    await runtime.start()
    server.runtimes["default/cat"] = runtime
    server.records.append(InvocationRecord("inv-1", "default/cat", 200, 0.012, None))
    store = SpanStore()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(store))
    with provider.get_tracer("test").start_as_current_span("chat claude-haiku-4-5") as span:
        span.set_attributes(
            {
                "clrk.invocation.id": "inv-1",
                "gen_ai.usage.input_tokens": 11,
                "http.request.header.x-api-key": ["[redacted]"],
            }
        )
    logs = LogBuffer()
    record = {"name": "clrk_runtime.agent", "levelname": "INFO", "msg": "[inv-1] hello from stderr"}
    logs.handle(logging.makeLogRecord(record))
    app = DevApp(server, store, logs, ["clrk dev: serving 1 agent(s)"])
    try:
        async with app.run_test() as pilot:
            await pilot.pause()
            agents = app.query_one("#agents", DataTable)
            assert agents.row_count == 1
            assert agents.get_row_at(0)[0] == "default/cat"
            assert agents.get_row_at(0)[2] == "1/1", "warm sandboxes over the target"
            requests = app.query_one("#requests", DataTable)
            assert requests.get_row_at(0)[1:4] == ["inv-1", "default/cat", "200"]
            traces = app.query_one("#traces", DataTable)
            assert traces.get_row_at(0)[:2] == ["chat claude-haiku-4-5", "inv-1"]
            attributes = str(app.query_one("#attributes", Static).render())
            assert "[redacted]" in attributes and "gen_ai.usage.input_tokens" in attributes
            text = "\n".join(str(line.text) for line in app.query_one("#logs", RichLog).lines)
            assert "hello from stderr" in text
            await pilot.press("q")
    finally:
        await runtime.stop()


async def test_the_logs_pane_shows_each_line_once_after_the_buffer_wraps() -> None:
    server = DevServer(DevSettings(apply=["unused"]), environ={})
    logs = LogBuffer(capacity=3)

    def log(message: str) -> None:
        logs.handle(logging.makeLogRecord({"name": "clrk.dev", "levelname": "INFO", "msg": message}))

    for n in range(1, 6):
        log(f"line {n}")
    app = DevApp(server, SpanStore(), logs, [])
    async with app.run_test() as pilot:
        await pilot.pause()
        for n in range(6, 8):
            log(f"line {n}")
        app.refresh_panes()
        app.refresh_panes()
        await pilot.pause()
        shown = [str(line.text).rsplit(" ", 1)[1] for line in app.query_one("#logs", RichLog).lines]
        assert shown == ["3", "4", "5", "6", "7"], "the three lines held at start, then each new line once"
        await pilot.press("q")


async def test_the_agents_pane_says_how_warm_sandboxes_start_their_agent() -> None:
    """``start``: ahead with warm start, on request once it kept failing (with the shim's
    reason), ``-`` without it; ``warm`` counts the sandboxes whose agent is ready."""
    ready = 'echo ready >&"$CLRK_READY_FD"; exec cat'
    settings = {
        "default/ahead": RuntimeSettings(command=["sh", "-c", ready], warm_start=True, warm_pool=1),
        "default/broken": RuntimeSettings(command=["sh", "-c", "echo nope >&2; exit 3"], warm_start=True, warm_pool=1),
        "default/cold": RuntimeSettings(command=["cat"], warm_pool=1),
    }
    server = DevServer(DevSettings(apply=["unused"]), environ={})
    for ref, each in settings.items():
        server.runtimes[ref] = AgentRuntime(each.model_copy(update={"agent": ref, "sandbox": "plain"}))
    try:
        for runtime in server.runtimes.values():
            await runtime.start()  # the broken one's start falls back to starting on request
        app = DevApp(server, SpanStore(), LogBuffer(), [])
        async with app.run_test() as pilot:
            await pilot.pause()
            agents = app.query_one("#agents", DataTable)
            rows = {agents.get_row_at(i)[0]: agents.get_row_at(i)[2:4] for i in range(agents.row_count)}
            assert rows == {
                "default/ahead": ["1/1", "ahead"],
                "default/broken": [
                    "1/1",
                    "on request (failing: exited with status 3 before it said it was ready; stderr: nope)",
                ],
                "default/cold": ["1/1", "-"],
            }
            await pilot.press("q")
    finally:
        for runtime in server.runtimes.values():
            await runtime.stop()


def test_the_start_cell_counts_starting_sandboxes_and_failures_and_cuts_a_long_reason() -> None:
    assert warm_start_cell(WarmStartStats("on", 2, 1, "exited with status 1")) == "ahead (2 starting, 1 failed)"
    cell = warm_start_cell(WarmStartStats("failing", 0, 3, "x" * 500 + "\nsecond line"))
    assert cell.startswith("on request (failing: xxx") and cell.endswith("…)") and len(cell) < 120
