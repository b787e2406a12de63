"""What ``clrk validate`` says about limits a manifest is within but may not expect: pure, no I/O.

A TaskAgent's ``spec.timeout`` may be up to an hour (:data:`~clrk_runtime.protocol.invocations.
MAX_ASYNC_TIMEOUT_S`), but only its async invocations (``Prefer: respond-async``) may run that
long: a synchronous call, buffered or streamed, is cut at :data:`~clrk_runtime.protocol.
invocations.MAX_SYNC_TIMEOUT_S` (Knative's default request limit, and longer than most proxies
hold a request). Such an agent is valid; the note says which limit applies to which call.
"""

from __future__ import annotations

from collections.abc import Iterable

from clrk.api import TaskAgent
from clrk_runtime.protocol.invocations import MAX_SYNC_TIMEOUT_S

__all__ = ["limit_notes", "short_duration"]


def short_duration(seconds: float) -> str:
    """``1h``, ``30m``, ``90m``, ``650s``, ``0.5s``: the shortest whole unit that says it exactly."""
    if seconds == int(seconds):
        whole = int(seconds)
        if whole and whole % 3600 == 0:
            return f"{whole // 3600}h"
        if whole and whole % 60 == 0:
            return f"{whole // 60}m"
        return f"{whole}s"
    return f"{seconds:g}s"


def limit_notes(agents: Iterable[TaskAgent]) -> list[str]:
    """One note per agent whose ``spec.timeout`` is over what a synchronous call may run."""
    notes = []
    sync = f"{MAX_SYNC_TIMEOUT_S:g}s"
    for agent in agents:
        seconds = agent.spec.timeout.total_seconds()
        if seconds > MAX_SYNC_TIMEOUT_S:
            timeout = short_duration(seconds)
            notes.append(
                f"TaskAgent {agent.ref}: spec.timeout {timeout}: async invocations (Prefer: respond-async) "
                f"may run {timeout}; synchronous calls are cut at {sync} (MAX_SYNC_TIMEOUT_S: Knative's "
                "default request limit and what proxies hold)"
            )
    return notes
