"""The clrk runtime shim: serves one TaskAgent over HTTP, one fresh sandbox per request.

It ships into every agent image and must stay small: it never imports ``clrk``.

In-process composition (``clrk dev``)::

    runtime = AgentRuntime(RuntimeSettings(command=["./agent.sh"], agent="team/bot"))
    await runtime.start()                       # warm pool filled: ready
    response = await runtime.handle(headers, body)
    runtime.stats                               # warm, busy, queued, limits
    await runtime.stop()                        # drain, then clean up

``ShimApp(runtime)`` is the same runtime as an ASGI app; ``clrk_runtime.testing.invoke`` is the
harness for agent authors.

The package is laid out along the path of one request, each stage a folder that imports only
the ones below it (checked by import-linter, see ``pyproject.toml``)::

    server/       HTTP: clrk-shim, the ASGI app, functions-framework, uvicorn protocols
    service/      the invocation service: AgentRuntime, the pool and queue, one request's span
    invocation/   one invocation: its environment, its run, its answer
    sandbox/      where it runs: bubblewrap or plain, uids, cleanup, the egress relay
    launching/    how processes start: the spawner and its pipes
    settings.py   the one settings object
    protocol/     the wire contract (headers, ids, errors, envelope, durations, proxy tokens)

``testing`` sits on top, beside ``server``: the harness agent authors run their tests with.
"""

from clrk_runtime.invocation.outcomes import Response
from clrk_runtime.server.app import ShimApp
from clrk_runtime.service.pool import NoCapacity, PoolStats
from clrk_runtime.service.runtime import AgentRuntime, RuntimeStats
from clrk_runtime.settings import RuntimeSettings

__version__ = "0.1.0"
__all__ = [
    "AgentRuntime",
    "NoCapacity",
    "PoolStats",
    "Response",
    "RuntimeSettings",
    "RuntimeStats",
    "ShimApp",
]
