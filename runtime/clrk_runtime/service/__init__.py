"""The invocation service: one agent's runtime, which answers requests with sandboxed runs.

:mod:`.runtime` (:class:`AgentRuntime`: start, handle, drain, stop), :mod:`.pool` (warm sandboxes,
the concurrency bound and the queue in front of it), :mod:`.handling` (one request from queue to
answer, inside its span).
"""

from clrk_runtime.service.pool import NoCapacity, PoolStats
from clrk_runtime.service.runtime import AgentRuntime, RuntimeStats

__all__ = ["AgentRuntime", "NoCapacity", "PoolStats", "RuntimeStats"]
