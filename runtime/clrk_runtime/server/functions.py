"""The shim served through functions-framework, the serverless convention (Cloud Run functions).

``clrk-shim --server functions-framework`` (or ``CLRK_SERVER=functions-framework``) serves the same
:class:`~clrk_runtime.service.runtime.AgentRuntime` as the default server, through
functions-framework's own ASGI app: this module is the function source, :func:`clrk` its target
(an HTTP function). Answers, probes and refusals are the default server's, byte for byte: the
target hands every request to :meth:`ShimApp.answer <clrk_runtime.server.app.ShimApp.answer>`.
A streamed answer (``Accept: text/event-stream``) goes out as Starlette's ``StreamingResponse``,
which stops at the caller's disconnect; the run is cancelled then (its tree killed), as with the
default server, and so is a buffered one. What functions-framework adds is its own routing
(``/robots.txt`` and ``/favicon.ico`` are 404) and its own error page for an exception that
escapes a function (none does here). The default server is leaner on the hot path
(``hack/bench_shim.py``); pick this one where a host expects a functions-framework app.

functions-framework can also load this file itself::

    functions-framework --asgi --target clrk \\
        --source "$(python -c 'import clrk_runtime.server.functions as f; print(f.__file__)')"

Settings then come from ``CLRK_*`` (this file is the edge in that mode), and, with no start-up
hook there, the runtime starts on the first request; its sandboxes die with the process.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import functions_framework.aio
from functions_framework.aio import create_asgi_app_from_module
from starlette.requests import Request
from starlette.responses import Response as StarletteResponse
from starlette.responses import StreamingResponse
from starlette.types import Receive as StarletteReceive
from starlette.types import Scope as StarletteScope
from starlette.types import Send as StarletteSend

from clrk_runtime.invocation.streaming import StreamedAnswer
from clrk_runtime.server.app import Receive, Scope, Send, ShimApp, run_lifespan
from clrk_runtime.service.runtime import AgentRuntime
from clrk_runtime.settings import RuntimeSettings

__all__ = ["clrk", "functions_app"]

TARGET = "clrk"
_served: ShimApp | None = None
"""The app whose runtime the target answers with: given by :func:`functions_app`, or made from
``CLRK_*`` on the first request when functions-framework loaded this file on its own."""
_starting = asyncio.Lock()


async def _app() -> ShimApp:
    global _served
    async with _starting:
        if _served is None:
            runtime = AgentRuntime(RuntimeSettings())
            await runtime.start()
            _served = ShimApp(runtime, lifespan=False)
    return _served


@functions_framework.aio.http
async def clrk(request: Request) -> StarletteResponse:
    """Answer one request with the shim (``POST`` invokes the agent; ``GET /readyz`` probes it)."""
    app = await _app()
    answer = await app.answer(request.method, request.url.path, request.scope["headers"], request.receive)
    if isinstance(answer, StreamedAnswer):
        return _Streamed(answer)
    return StarletteResponse(answer.body, answer.status, headers=dict(answer.headers))


class _Streamed(StreamingResponse):
    """A :class:`StreamedAnswer` through Starlette, closed however the sending ends (the caller's
    disconnect cancels the sending: the run is cancelled then)."""

    def __init__(self, answer: StreamedAnswer) -> None:
        super().__init__(answer, answer.status, headers=dict(answer.headers))
        self._answer = answer

    async def __call__(self, scope: StarletteScope, receive: StarletteReceive, send: StarletteSend) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._answer.aclose()


class _WithLifespan:
    """functions-framework's app, with the runtime started and drained alongside the server."""

    def __init__(self, app: Any, runtime: AgentRuntime) -> None:
        self._app = app
        self._runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await run_lifespan(self._runtime, receive, send)
        else:
            await self._app(scope, receive, send)


def functions_app(runtime: AgentRuntime) -> _WithLifespan:
    """An ASGI app serving ``runtime`` through functions-framework (one per process: the target
    is this module's)."""
    global _served
    _served = ShimApp(runtime, lifespan=False)
    module = sys.modules[__name__]
    app = create_asgi_app_from_module(TARGET, __file__, "http", module, module.__spec__)  # type: ignore[no-untyped-call]
    return _WithLifespan(app, runtime)
