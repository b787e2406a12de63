"""Token budgets: counters per agent over a rolling window, behind one small interface.

A call first *reserves* an estimate (the request's ``max_tokens`` plus its body bytes / 4), which
fails when the window's total would pass the ceiling; after the response it is *settled* to the
real usage. Reserving is atomic, so concurrent calls cannot overshoot together.

The window rolls in :data:`BUCKETS` buckets (a one-hour window counts by the minute): a bucket
counts until its whole span has left the window, so the total is never under the truth, and the
work per call stays constant however many calls the window holds.

Backends: :class:`SqliteBudgets` (one process or one machine; a file under the state directory,
so counters survive a restart) and :class:`~clrk.egress.redis_budgets.RedisBudgets` (several
gateway replicas).
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from clrk.egress.config import Budget
from clrk.egress.messages import ModelRequest

__all__ = [
    "BUCKETS",
    "BudgetExhausted",
    "BudgetStore",
    "Reservation",
    "SqliteBudgets",
    "bucket_of",
    "estimate_tokens",
    "retry_after",
]

BUCKETS = 60
DEFAULT_MAX_TOKENS = 4096
"""Reserved for output when a request names no ``max_tokens``."""


def estimate_tokens(request: ModelRequest, body_bytes: int) -> int:
    """What a call may cost at most: its output ceiling plus a generous input estimate."""
    return (request.max_tokens or DEFAULT_MAX_TOKENS) + math.ceil(body_bytes / 4)


def bucket_of(now: float, budget: Budget) -> tuple[float, float]:
    """``(start of now's bucket, the time before which a bucket has left the window)``."""
    width = budget.window_seconds / BUCKETS
    start = math.floor(now / width) * width
    return start, now - budget.window_seconds - width


def retry_after(buckets: list[tuple[float, int]], tokens: int, budget: Budget, now: float) -> float:
    """Seconds until enough ``(bucket start, tokens)`` (oldest first) leave for ``tokens`` to fit."""
    width = budget.window_seconds / BUCKETS
    excess = sum(t for _, t in buckets) + tokens - budget.tokens
    for start, spent in buckets:
        excess -= spent
        if excess <= 0:
            return max(0.0, start + width + budget.window_seconds - now)
    return budget.window_seconds


@dataclass(frozen=True, slots=True)
class Reservation:
    agent: str
    bucket: float
    tokens: int


class BudgetExhausted(Exception):
    """The reservation would pass the agent's ceiling; retry after ``retry_after_s``."""

    def __init__(self, agent: str, retry_after_s: float) -> None:
        super().__init__(f"budget of {agent} exhausted; retry after {retry_after_s:.0f}s")
        self.agent = agent
        self.retry_after_s = retry_after_s


class BudgetStore(Protocol):
    async def reserve(self, agent: str, tokens: int, budget: Budget, now: float) -> Reservation:
        """Count ``tokens`` against ``agent`` or raise :class:`BudgetExhausted`."""
        ...

    async def settle(self, reservation: Reservation, tokens: int) -> None:
        """Replace the reservation's estimate with the real ``tokens``."""
        ...

    async def used(self, agent: str, budget: Budget, now: float) -> int:
        """Tokens counted in the current window."""
        ...

    async def close(self) -> None: ...


class SqliteBudgets:
    """Counters in SQLite (WAL): atomic across the event loop and across processes on one host."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS buckets (agent TEXT NOT NULL, start REAL NOT NULL,"
            " tokens INTEGER NOT NULL, PRIMARY KEY (agent, start)) WITHOUT ROWID"
        )

    def _buckets(self, agent: str, gone: float) -> list[tuple[float, int]]:
        rows = self._db.execute(
            "SELECT start, tokens FROM buckets WHERE agent = ? AND start > ? ORDER BY start",
            (agent, gone),
        ).fetchall()
        return [(float(start), int(tokens)) for start, tokens in rows]

    async def reserve(self, agent: str, tokens: int, budget: Budget, now: float) -> Reservation:
        start, gone = bucket_of(now, budget)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("DELETE FROM buckets WHERE agent = ? AND start <= ?", (agent, gone))
            buckets = self._buckets(agent, gone)
            if sum(t for _, t in buckets) + tokens > budget.tokens:
                raise BudgetExhausted(agent, retry_after(buckets, tokens, budget, now))
            self._db.execute(
                "INSERT INTO buckets (agent, start, tokens) VALUES (?, ?, ?)"
                " ON CONFLICT (agent, start) DO UPDATE SET tokens = tokens + excluded.tokens",
                (agent, start, tokens),
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return Reservation(agent, start, tokens)

    async def settle(self, reservation: Reservation, tokens: int) -> None:
        if tokens != reservation.tokens:
            self._db.execute(
                "UPDATE buckets SET tokens = MAX(0, tokens + ?) WHERE agent = ? AND start = ?",
                (tokens - reservation.tokens, reservation.agent, reservation.bucket),
            )

    async def used(self, agent: str, budget: Budget, now: float) -> int:
        _, gone = bucket_of(now, budget)
        return sum(t for _, t in self._buckets(agent, gone))

    async def close(self) -> None:
        self._db.close()
