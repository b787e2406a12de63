"""The shim as a functions-framework function, for hosts that run functions (Cloud Run style)::

    source=$(python -c 'import clrk_runtime.function as f; print(f.__file__)')
    functions-framework --asgi --source "$source" --target clrk

Settings come from ``CLRK_*`` (this file is the edge in that mode). functions-framework has no
startup hook, so the runtime starts on the first request (or probe); its warm sandboxes die with
the process (bubblewrap's ``--die-with-parent``). ``clrk-shim`` serves the same runtime through
:class:`~clrk_runtime.asgi.ShimApp`, with a start-up fill of the warm pool and a SIGTERM drain.
"""

from __future__ import annotations

import asyncio

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response as StarletteResponse

from clrk_runtime.runtime import AgentRuntime
from clrk_runtime.settings import RuntimeSettings

__all__ = ["clrk"]

_runtime: AgentRuntime | None = None
_starting = asyncio.Lock()


async def _started() -> AgentRuntime:
    global _runtime
    async with _starting:
        if _runtime is None:
            runtime = AgentRuntime(RuntimeSettings())
            await runtime.start()
            _runtime = runtime
    return _runtime


@functions_framework.aio.http
async def clrk(request: Request) -> StarletteResponse:
    """Invoke the agent with the request (``GET /healthz`` and ``/readyz`` probe it)."""
    runtime = await _started()
    if request.method == "GET" and request.url.path in ("/healthz", "/livez", "/readyz"):
        return StarletteResponse(b'{"ready": true}', 200, media_type="application/json")
    headers = {k.lower(): v for k, v in request.headers.items()}
    response = await runtime.handle(headers, await request.body())
    return StarletteResponse(response.body, response.status, headers=dict(response.headers))
