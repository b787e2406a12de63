"""``clrk-shim``: serve one agent over HTTP. The edge: flags and ``CLRK_*`` become settings here.

    clrk-shim [--port 8080] [--timeout 100s] [--warm-pool N] [--warm-start [--warm-start-timeout 60s]]
              [--max-concurrency N]
              [--queue-size N] [--sandbox auto|bwrap|plain] [--env NAME=VALUE]…
              [--bind SRC:DEST]… [--agent NS/NAME] [--egress-proxy HOST:PORT]
              [--server clrk|functions-framework] -- ENTRYPOINT [ARGS…]

Every flag has a ``CLRK_*`` variable (flags win); Knative's ``PORT`` is honoured. SIGTERM stops
accepting, lets in-flight invocations finish (each bounded by its deadline), cleans up, exits 0.
Some settings are variables only: ``CLRK_KEEP_ALIVE_SECONDS`` (idle keep-alive connections, 120 s
by default: longer than Knative's queue-proxy keeps them), ``CLRK_HEAD_TIMEOUT_SECONDS``,
``CLRK_PYTHON`` (how to start the spawner) and the rest of :class:`RuntimeSettings`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn
from pydantic import ValidationError

from clrk_runtime.server.app import ShimApp
from clrk_runtime.server.protocols import http_protocol
from clrk_runtime.service.runtime import AgentRuntime
from clrk_runtime.settings import RuntimeSettings

__all__ = ["build_settings", "main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clrk-shim", description="Serve an agent program over HTTP, one sandbox per request."
    )
    parser.add_argument("--port", type=int)
    parser.add_argument("--host")
    parser.add_argument("--timeout", help="per-invocation deadline, e.g. 100s")
    parser.add_argument("--warm-pool", type=int, dest="warm_pool")
    parser.add_argument(
        "--warm-start",
        action="store_const",
        const=True,
        dest="warm_start",
        help="start the entrypoint in each warm sandbox before its request; it writes a line to $CLRK_READY_FD"
        " once ready, then reads stdin (docs/agents.md)",
    )
    parser.add_argument(
        "--warm-start-timeout",
        dest="warm_start_timeout",
        help="how long a warm-started entrypoint has to say it is ready, e.g. 60s (default)",
    )
    parser.add_argument("--max-concurrency", type=int, dest="max_concurrency")
    parser.add_argument("--queue-size", type=int, dest="queue_size")
    parser.add_argument("--sandbox", choices=["auto", "bwrap", "plain"])
    parser.add_argument(
        "--server",
        choices=["clrk", "functions-framework"],
        help="the HTTP app in front of the runtime (default: clrk's own, the leanest)",
    )
    parser.add_argument("--agent", help="namespace/name of the TaskAgent")
    parser.add_argument("--egress-proxy", dest="egress_proxy", help="host:port")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--bind", action="append", default=[], metavar="SRC:DEST")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- ENTRYPOINT [ARGS…]")
    return parser


def build_settings(argv: Sequence[str]) -> RuntimeSettings:
    """Settings from ``argv`` over the ``CLRK_*`` environment (the flags win)."""
    args = _parser().parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    fields = (
        "port",
        "host",
        "timeout",
        "warm_pool",
        "warm_start",
        "warm_start_timeout",
        "max_concurrency",
        "queue_size",
    )
    overrides: dict[str, Any] = {
        name: getattr(args, name)
        for name in (*fields, "sandbox", "server", "agent", "egress_proxy")
        if getattr(args, name) is not None
    }
    if command:
        overrides["command"] = command
    settings = RuntimeSettings(**overrides)
    extra_env = dict(_pair(item, "=", "--env NAME=VALUE") for item in args.env)
    if extra_env or args.bind:
        settings = settings.model_copy(
            update={
                "agent_env": {**settings.agent_env, **extra_env},
                "binds": [*settings.binds, *args.bind],
            }
        )
    return settings


def _pair(text: str, sep: str, usage: str) -> tuple[str, str]:
    name, found, value = text.partition(sep)
    if not found or not name:
        raise SystemExit(f"clrk-shim: expected {usage}, got {text!r}")
    return name, value


def _configure_tracing() -> None:
    """Export spans over OTLP when the standard OTEL_* variables ask for it (the edge only)."""
    if not any(k in os.environ for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER")):
        return
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = build_settings(sys.argv[1:] if argv is None else argv)
        runtime = AgentRuntime(settings)
    except (ValidationError, ValueError) as exc:
        raise SystemExit(f"clrk-shim: {exc}") from exc
    _configure_tracing()
    app: Any = ShimApp(runtime)
    if settings.server == "functions-framework":
        from clrk_runtime.server.functions import functions_app  # imports flask and more: only here

        app = functions_app(runtime)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_level="info",
        access_log=False,
        http=http_protocol(settings.head_timeout_seconds, invocation_ids=True),
        # Longer than Knative's queue-proxy keeps an idle upstream connection (90 s): a POST it
        # sends on a connection we closed meanwhile fails, and it does not retry POSTs.
        timeout_keep_alive=settings.keep_alive_seconds,
    )
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; a drained
    # shim has done its job, so SIGTERM's handler outside uvicorn does nothing and we exit 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
