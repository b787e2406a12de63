"""The ``clrk dev`` terminal UI (Textual): agents, requests, otel-traces and logs panes.

It only reads: the server's runtimes and records, the span store, the log buffer; a timer
refreshes the panes. Credentials never reach it: the egress gateway records credential headers
as ``[redacted]`` before a span is ever exported.
"""

from __future__ import annotations

import json
import time
from typing import ClassVar

from textual.app import App, ComposeResult
from textual.binding import BindingType
from textual.containers import Grid
from textual.widgets import DataTable, Footer, Header, RichLog, Static

from clrk.dev.logs import LogBuffer
from clrk.dev.serving import DevServer
from clrk.telemetry.spans import SpanStore, span_to_dict

__all__ = ["DevApp"]


def _tokens(server: DevServer, invocation_id: str) -> str:
    if server.egress is None:
        return ""
    if not server.egress.usage.calls(invocation_id):
        return "-"
    totals = server.egress.usage.totals(invocation_id)
    total_in = totals.input_tokens + totals.cache_read_input_tokens + totals.cache_creation_input_tokens
    return f"{total_in}/{totals.output_tokens}"


class DevApp(App[None]):
    TITLE = "clrk dev"
    CSS = """
    Grid { grid-size: 2 3; grid-rows: 1fr 1fr 8; }
    .pane { border: round $accent; height: 1fr; }
    #attributes { column-span: 2; height: 8; overflow-y: auto; border: round $accent; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [("q", "quit", "Quit")]

    def __init__(self, server: DevServer, store: SpanStore, logs: LogBuffer, banner: list[str]) -> None:
        super().__init__()
        self.server, self.store, self.log_buffer, self.banner = server, store, logs, banner
        self._log_cursor = 0  # the last log line shown, as LogBuffer numbers them

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
            attributes = Static("", id="attributes")
            attributes.border_title = "span attributes"
            yield attributes
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#agents", DataTable).add_columns("agent", "sandbox", "warm", "busy", "queue", "limits")
        self.query_one("#requests", DataTable).add_columns(
            "time", "invocation", "agent", "status", "duration", "tokens in/out"
        )
        self.query_one("#traces", DataTable).add_columns("span", "invocation", "ms", "status")
        log = self.query_one("#logs", RichLog)
        for line in self.banner:
            log.write(line)
        self.refresh_panes()
        self.set_interval(0.5, self.refresh_panes)

    def refresh_panes(self) -> None:
        agents = self.query_one("#agents", DataTable)
        agents.clear()
        for ref, runtime in sorted(self.server.runtimes.items()):
            pool = runtime.stats.pool
            agents.add_row(
                ref,
                pool.kind,
                f"{pool.warm}/{pool.warm_target}",
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

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "traces":
            return
        spans = [span_to_dict(s) for s in reversed(self.store.spans()[-200:])]
        if 0 <= event.cursor_row < len(spans):
            self.query_one("#attributes", Static).update(
                json.dumps(spans[event.cursor_row]["attributes"], sort_keys=True)
            )
