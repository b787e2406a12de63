"""Revoked invocations, each remembered only until its proxy token would have expired anyway.

A proxy token carries its own expiry (:attr:`~clrk_runtime.protocol.tokens.ProxyClaims.expires_at`)
and the gateway refuses an expired token whatever else it knows, so a revocation matters only
until that expiry (plus a little slack for clocks), and is forgotten after it.

Expiries nearly always arrive in order (the gateway's default is "now + the longest token
lifetime"), so they go to a FIFO and are dropped from its front: amortised O(1) per call, never a
rebuild. An expiry earlier than the FIFO's last goes to a heap instead (O(log n)). Both stay
sorted, so every call drops exactly the entries past their time: the store holds the revoked ids
not yet expired, and no more.
"""

from __future__ import annotations

import heapq
from collections import deque

__all__ = ["Revocations"]


class Revocations:
    """Revoked invocation ids with the time each may be forgotten; not thread-safe (one loop)."""

    def __init__(self, *, slack_s: float = 0.0) -> None:
        """``slack_s``: keep each id this long past its expiry (a wall clock stepping back)."""
        if slack_s < 0:
            raise ValueError(f"slack_s must be >= 0, found {slack_s}")
        self._slack_s = slack_s
        self._until: dict[str, float] = {}
        """id → time after which it is forgotten (its expiry plus the slack)."""
        self._in_order: deque[tuple[float, str]] = deque()
        self._out_of_order: list[tuple[float, str]] = []

    def add(self, invocation_id: str, expires_at: float, *, now: float) -> None:
        """Remember ``invocation_id`` as revoked until ``expires_at`` (plus the slack)."""
        self.forget_expired(now)
        until = expires_at + self._slack_s
        kept = self._until.get(invocation_id)
        if until <= now or (kept is not None and kept >= until):
            return  # its token is refused as expired already, or the id is already kept as long
        self._until[invocation_id] = until  # an older, shorter entry goes stale: see _drop
        entry = (until, invocation_id)
        if not self._in_order or self._in_order[-1][0] <= until:
            self._in_order.append(entry)
        else:
            heapq.heappush(self._out_of_order, entry)

    def forget_expired(self, now: float) -> None:
        """Drop every id whose time has passed: O(1) when none has, O(1) amortised per id."""
        in_order = self._in_order
        while in_order and in_order[0][0] <= now:
            self._drop(*in_order.popleft())
        out_of_order = self._out_of_order
        while out_of_order and out_of_order[0][0] <= now:
            self._drop(*heapq.heappop(out_of_order))

    def _drop(self, until: float, invocation_id: str) -> None:
        if self._until.get(invocation_id) == until:  # not re-revoked for longer since
            del self._until[invocation_id]

    def __contains__(self, invocation_id: object) -> bool:
        return invocation_id in self._until

    def __len__(self) -> int:
        """Revoked ids kept now."""
        return len(self._until)

    @property
    def entries(self) -> int:
        """Queued entries, stale ones (ids re-revoked for longer) included: ``>= len(self)``."""
        return len(self._in_order) + len(self._out_of_order)
