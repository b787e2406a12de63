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
"""

from clrk_runtime.asgi import ShimApp
from clrk_runtime.outcomes import Response
from clrk_runtime.pool import NoCapacity, PoolStats
from clrk_runtime.runtime import AgentRuntime, RuntimeStats
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
