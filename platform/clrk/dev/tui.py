"""The ``clrk dev`` terminal UI (Textual): agents, requests, otel-traces, logs and output panes.

The agents pane shows each agent's pool: its warm sandboxes (ready ones over the target), how they
start the agent (:func:`warm_start_cell`: ahead with ``spec.warmStart``, else on request), the busy
and queued invocations and its limits.

It only reads: the server's runtimes and records, the span store, the log buffer, and the stdout
of invocations as they run (:mod:`.live_output`, subscribed to every runtime, again after each
reload); timers refresh the panes. The output pane follows the last invocation started that
still runs; Enter on a row of the requests pane shows that one's last lines instead, ``f``
follows again. Credentials never reach it: the egress gateway records credential headers as
``[redacted]`` before a span is ever exported.
"""

from __future__ import annotations

import json
import time
from typing import ClassVar

from textual.app import App, ComposeResult
from textual.binding import BindingType
from textual.containers import Grid
from textual.widgets import DataTable, Footer, Header, RichLog, Static

from clrk.dev.live_output import LiveOutput, OutputWatch
from clrk.dev.logs import LogBuffer
from clrk.dev.serving import DevServer
from clrk.telemetry.spans import SpanStore, span_to_dict
from clrk_runtime.service.warming import WarmStartStats

__all__ = ["DevApp", "warm_start_cell"]

REASON_CHARACTERS = 80
"""Characters of a failing warm start's reason shown in the agents pane (the log has it whole)."""


def _tokens(server: DevServer, invocation_id: str) -> str:
    if server.egress is None:
        return ""
    if not server.egress.usage.calls(invocation_id):
        return "-"
    totals = server.egress.usage.totals(invocation_id)
    total_in = totals.input_tokens + totals.cache_read_input_tokens + totals.cache_creation_input_tokens
    return f"{total_in}/{totals.output_tokens}"


def warm_start_cell(stats: WarmStartStats) -> str:
    """The agents pane's ``start`` column: ``-`` without warm start; ``ahead`` while warm sandboxes
    start the agent before their request (with those still starting and the failures in a row);
    ``on request (failing: <reason>)`` once it kept failing and the shim fell back."""
    if stats.state == "off":
        return "-"
    if stats.state == "failing":
        reason = " ".join(stats.reason.split())
        if len(reason) > REASON_CHARACTERS:
            reason = reason[: REASON_CHARACTERS - 1] + "…"
        return f"on request (failing: {reason or 'no reason given'})"
    notes = [f"{stats.starting} starting"] if stats.starting else []
    notes += [f"{stats.failures} failed"] if stats.failures else []
    return "ahead" + (f" ({', '.join(notes)})" if notes else "")


class DevApp(App[None]):
    TITLE = "clrk dev"
    CSS = """
    Grid { grid-size: 2 4; grid-rows: 1fr 1fr 1fr 8; }
    .pane { border: round $accent; height: 1fr; }
    #output { column-span: 2; }
    #attributes { column-span: 2; height: 8; overflow-y: auto; border: round $accent; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [("q", "quit", "Quit"), ("f", "follow", "Follow the latest output")]
    OUTPUT_INTERVAL = 0.1
    """Seconds between two looks at the live output (drawn only when it changed)."""

    def __init__(self, server: DevServer, store: SpanStore, logs: LogBuffer, banner: list[str]) -> None:
        super().__init__()
        self.server, self.store, self.log_buffer, self.banner = server, store, logs, banner
        self._log_cursor = 0  # the last log line shown, as LogBuffer numbers them
        self.live = LiveOutput()
        self._watch = OutputWatch(self.live)
        self._pinned: str | None = None  # the invocation chosen in the requests pane
        self._shown: tuple[str | None, bool] = (None, False)  # invocation in the output pane, running
        self._shown_lines = 0  # its lines drawn so far, as LiveOutput counts them
        self._drawn = -1  # LiveOutput.version last drawn

    def compose(self) -> ComposeResult:
        yield Header()
        with Grid():
            agents: DataTable[str] = DataTable(id="agents", classes="pane", cursor_type="row")
            agents.border_title = "agents"
            yield agents
            requests: DataTable[str] = DataTable(id="requests", classes="pane", cursor_type="row")
            requests.border_title = "requests"
            yield requests
            traces: DataTable[str] = DataTable(id="traces", classes="pane", cursor_type="row")
            traces.border_title = "otel-traces"
            yield traces
            logs = RichLog(id="logs", classes="pane", wrap=False, max_lines=2000)
            logs.border_title = "logs"
            yield logs
            output = RichLog(id="output", classes="pane", wrap=False, max_lines=self.live.lines_kept)
            output.border_title = "output"
            yield output
            attributes = Static("", id="attributes")
            attributes.border_title = "span attributes"
            yield attributes
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#agents", DataTable).add_columns("agent", "sandbox", "warm", "start", "busy", "queue", "limits")
        self.query_one("#requests", DataTable).add_columns(
            "time", "invocation", "agent", "status", "duration", "tokens in/out"
        )
        self.query_one("#traces", DataTable).add_columns("span", "invocation", "ms", "status")
        log = self.query_one("#logs", RichLog)
        for line in self.banner:
            log.write(line)
        self.refresh_panes()
        self.refresh_output()
        self.set_interval(0.5, self.refresh_panes)
        self.set_interval(self.OUTPUT_INTERVAL, self.refresh_output)

    def on_unmount(self) -> None:
        self._watch.close()

    def refresh_panes(self) -> None:
        agents = self.query_one("#agents", DataTable)
        agents.clear()
        for ref, runtime in sorted(self.server.runtimes.items()):
            pool = runtime.stats.pool
            agents.add_row(
                ref,
                pool.kind,
                f"{pool.warm}/{pool.warm_target}",
                warm_start_cell(pool.warm_start),
                str(pool.busy),
                str(pool.queued),
                f"conc {pool.max_concurrency}, queue {pool.queue_size}",
            )
        requests = self.query_one("#requests", DataTable)
        requests.clear()
        for record in reversed(self.server.records):
            requests.add_row(
                time.strftime("%H:%M:%S", time.localtime(record.at)),
                record.invocation_id,
                record.agent,
                str(record.status),
                f"{record.duration * 1000:.0f} ms",
                _tokens(self.server, record.invocation_id),
            )
        traces = self.query_one("#traces", DataTable)
        traces.clear()
        spans = [span_to_dict(s) for s in reversed(self.store.spans()[-200:])]
        for span in spans:
            attrs = span["attributes"]
            traces.add_row(
                span["name"],
                str(attrs.get("clrk.invocation.id", "")),
                f"{span['durationMs']:.1f}",
                span["status"],
            )
        if spans:
            self.query_one("#attributes", Static).update(
                json.dumps(spans[0]["attributes"], indent=None, sort_keys=True)
            )
        log = self.query_one("#logs", RichLog)
        new, self._log_cursor = self.log_buffer.since(self._log_cursor)
        for line in new:
            log.write(line)

    def refresh_output(self) -> None:
        """Draw what the output pane lacks: the lines new since the last look, or all the lines
        kept of another invocation once the one to show changed. Watches the runtimes a reload
        started first (it swaps ``server.runtimes``), so a new one's runs are seen from their start
        but for the few started within one interval of the swap."""
        self._watch.sync(self.server.runtimes)
        invocation = self._pinned or self.live.latest()
        state = (invocation, invocation is not None and self.live.is_running(invocation))
        if self.live.version == self._drawn and state == self._shown:
            return
        self._drawn = self.live.version
        output = self.query_one("#output", RichLog)
        if invocation != self._shown[0]:
            output.clear()
            self._shown_lines = 0
        if state != self._shown:
            self._shown = state
            running = "running" if state[1] else "ended"
            agent = (self.live.agent(invocation) or "") if invocation else ""
            output.border_title = f"output: {agent} {invocation} ({running})" if invocation else "output"
        if invocation is None:
            return
        lines, self._shown_lines = self.live.since(invocation, self._shown_lines)
        for line in lines:
            output.write(line)

    def action_follow(self) -> None:
        self._pinned = None
        self.refresh_output()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "requests":
            self._pinned = str(event.data_table.get_row(event.row_key)[1]) or None
            self.refresh_output()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "traces":
            return
        spans = [span_to_dict(s) for s in reversed(self.store.spans()[-200:])]
        if 0 <= event.cursor_row < len(spans):
            self.query_one("#attributes", Static).update(
                json.dumps(spans[event.cursor_row]["attributes"], sort_keys=True)
            )
