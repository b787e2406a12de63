"""Run ``clrk dev`` until Ctrl-C or SIGTERM: logging, tracing, the server, reloads, the TUI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Mapping, Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from clrk.dev.logs import PLAIN_FORMAT, LogBuffer
from clrk.dev.serving import DevServer
from clrk.dev.settings import DevSettings
from clrk.ingress import CallerKeys, InvocationRecord
from clrk.telemetry.redaction import SecretScrubber
from clrk.telemetry.spans import SpanStore, configure_tracing, span_to_dict
from clrk_runtime.protocol.routes import TRACES_PATH

__all__ = ["run_dev", "traces_route"]

log = logging.getLogger("clrk.dev")


def traces_route(store: SpanStore, callers: CallerKeys) -> Route:
    """``GET /_clrk/traces[?invocation=ID]``: recent spans as JSON, for ``clrk traces``.

    Spans hold other callers' invocation ids, agents' stderr tails and token counts: the route
    asks for a Caller's key as ``POST /`` does (401 without one), and shows a caller only the spans
    of its own invocations (those whose ingress span names it); in open mode, every span."""

    async def traces(request: Request) -> Response:
        caller = callers.authenticate(request.headers.get("authorization"))
        spans = store.spans(request.query_params.get("invocation"))
        if caller is not None:
            own = _invocations_of(store.spans(), caller.name)
            spans = [s for s in spans if s.attributes and s.attributes.get("clrk.invocation.id") in own]
        return JSONResponse({"spans": [span_to_dict(s) for s in spans]})

    return Route(TRACES_PATH, traces, methods=["GET"])


def _invocations_of(spans: Sequence[ReadableSpan], caller: str) -> set[object]:
    """The invocation ids whose ingress span names ``caller``."""
    return {
        s.attributes.get("clrk.invocation.id")
        for s in spans
        if s.attributes and s.attributes.get("clrk.caller") == caller
    }


def _log_record(record: InvocationRecord) -> None:
    log.info(
        "invocation=%s agent=%s status=%d duration=%.3fs",
        record.invocation_id,
        record.agent,
        record.status,
        record.duration,
    )


async def run_dev(settings: DevSettings, environ: Mapping[str, str], *, tui: bool) -> None:
    provider, store = configure_tracing("clrk-dev", environ)
    trace.set_tracer_provider(provider)
    buffer = LogBuffer()
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for chatty in ("httpx", "mitmproxy"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    if tui:
        root.addHandler(buffer)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
        root.addHandler(handler)
    logs_dir = settings.state_dir / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    to_file = logging.FileHandler(logs_dir / "dev.log", encoding="utf-8")
    to_file.setFormatter(logging.Formatter(PLAIN_FORMAT))
    root.addHandler(to_file)
    callers = CallerKeys()  # filled by the server as it starts
    server = DevServer(
        settings, environ, on_finished=_log_record, extra_routes=[traces_route(store, callers)], callers=callers
    )
    await server.start()
    scrubber = SecretScrubber(server.secret_values())  # defence in depth: no value in any log line
    for each in root.handlers:
        each.addFilter(scrubber)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: its terminal went away
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(server.watch())
    try:
        banner = [f"clrk dev: serving {len(server.runtimes)} agent(s) on http://{settings.host}:{server.port}/"]
        banner += [f"  {command}" for command in server.curl_commands()]
        if server.callback_keys is not None:
            banner.append(
                "async callbacks are signed (Standard Webhooks); each namespace's secret is in "
                f"{server.callback_keys.secrets_dir}/<namespace>"
            )
        if tui:
            from clrk.dev.tui import DevApp

            app = DevApp(server, store, buffer, banner)
            ui = asyncio.create_task(app.run_async())
            waiter = asyncio.create_task(stop.wait())
            await asyncio.wait({ui, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not ui.done():
                app.exit()
                await ui
            waiter.cancel()
        else:
            print("\n".join(banner), flush=True)
            print(
                json.dumps({"event": "ready", "port": server.port, "agents": sorted(server.runtimes)}),
                flush=True,
            )
            await stop.wait()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        log.info("shutting down: letting in-flight invocations finish")
        await server.stop()
        provider.shutdown()
        root.removeHandler(to_file)
        to_file.close()
