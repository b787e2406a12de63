"""Model calls as the gateway saw them, kept per invocation for the TUI and the requests pane.

:class:`ModelCall` is filled in by the accounting addon (and read by budget and tracing);
:class:`UsageStore` keeps finished calls in memory, bounded, keyed by invocation id, and tells
subscribers about each one as it finishes.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from clrk.egress.messages import ModelRequest, ModelUsage

__all__ = ["CALL", "ModelCall", "UsageStore"]

log = logging.getLogger(__name__)

CALL = "clrk.call"
"""``flow.metadata`` key holding the flow's :class:`ModelCall`."""


@dataclass(slots=True)
class ModelCall:
    """One ``POST /v1/messages`` through the gateway."""

    invocation_id: str
    agent: str
    host: str
    request: ModelRequest
    started_at: float
    usage: ModelUsage = field(default_factory=ModelUsage)
    status: int = 0
    """HTTP status the agent got (the gateway's own 429 included); 0 while in flight."""
    error: str = ""
    """Why the call failed in transport (reset, TLS, …), or the error type of an error event."""
    finished_at: float | None = None

    @property
    def duration_s(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at


Listener = Callable[[ModelCall], None]


class UsageStore:
    """Finished calls per invocation; the oldest invocations go past ``max_invocations``."""

    def __init__(self, max_invocations: int = 10_000) -> None:
        self._max = max_invocations
        self._calls: OrderedDict[str, list[ModelCall]] = OrderedDict()
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every finished call; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def record(self, call: ModelCall) -> None:
        calls = self._calls.setdefault(call.invocation_id, [])
        self._calls.move_to_end(call.invocation_id)
        calls.append(call)
        while len(self._calls) > self._max:
            self._calls.popitem(last=False)
        for listener in list(self._listeners):
            try:
                listener(call)
            except Exception:
                log.exception("usage listener failed")

    def calls(self, invocation_id: str) -> list[ModelCall]:
        return list(self._calls.get(invocation_id, ()))

    def totals(self, invocation_id: str) -> ModelUsage:
        """Summed tokens of an invocation's calls (model and stop reason of the last)."""
        total = ModelUsage()
        for call in self._calls.get(invocation_id, ()):
            u = call.usage
            total.input_tokens += u.input_tokens
            total.output_tokens += u.output_tokens
            total.cache_read_input_tokens += u.cache_read_input_tokens
            total.cache_creation_input_tokens += u.cache_creation_input_tokens
            total.model = u.model or total.model
            total.stop_reason = u.stop_reason or total.stop_reason
        return total

    def forget(self, invocation_id: str) -> None:
        self._calls.pop(invocation_id, None)
