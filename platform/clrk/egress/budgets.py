"""Token budgets: counters per agent over a rolling window, behind one small interface.

A call first *reserves* an estimate (the request's ``max_tokens`` plus its body bytes / 4), which
fails when the window's total would pass the ceiling; after the response it is *settled* to the
real usage. Reserving is atomic (one SQLite write transaction, one Redis script), so concurrent
calls cannot overshoot together: twelve calls at once of 5k tokens each against 20k admit three.
The estimate takes the output the call may write and about four bytes of body per input token
(what prose and code average); model hosts must be sent bodies unencoded (:mod:`clrk.egress.paths`
answers 415 otherwise), so it reads what the upstream reads. A denser body (a token is at least
one byte) and tokens the upstream adds that no body shows (a server tool's fetched results) are
counted when the call settles: by that much per call in flight can a window pass its ceiling.

The window rolls in :data:`BUCKETS` buckets (a one-hour window counts by the minute): a bucket
counts until its whole span has left the window, so the total is never under the truth, and the
work per call stays constant however many calls the window holds.

Backends: :class:`SqliteBudgets` (one process or one machine; a file under the state directory,
so counters survive a restart) and :class:`~clrk.egress.redis_budgets.RedisBudgets` (several
gateway replicas). Both are asynchronous all the way: a budget check never blocks the event loop
the gateway shares with everything else ``clrk dev`` serves.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from clrk.api.egress import Budget
from clrk.egress.messages import ModelRequest
from clrk.storage import PrivateDatabase

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


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS buckets (agent TEXT NOT NULL, start REAL NOT NULL,"
    " tokens INTEGER NOT NULL, PRIMARY KEY (agent, start)) WITHOUT ROWID",
)


class SqliteBudgets:
    """Counters in SQLite (WAL): atomic across the event loop and across processes on one host.

    sqlite3 blocks: a query waits up to :data:`~clrk.storage.BUSY_TIMEOUT_MS` for another
    process's write lock. So every query runs in one worker thread of this store's own
    (:class:`~clrk.storage.PrivateDatabase`), which alone opens and uses the connection (sqlite3's
    ``check_same_thread`` stays on to prove it); the loop only awaits.
    Queries queue in order behind that thread instead of taking threads from the loop's default
    executor (which mitmproxy needs for DNS). A call cancelled while its query runs still
    completes in the thread: a reservation nobody settles keeps its estimate, never undercounting.
    """

    def __init__(self, path: Path) -> None:
        """Opens nothing yet: the worker opens ``path`` on the first query; :meth:`open` does it now."""
        self._database = PrivateDatabase(path, _SCHEMA, name="clrk-budgets")
        self._run = self._database.run

    @classmethod
    async def open(cls, path: Path) -> SqliteBudgets:
        """A store whose file is open (and readable by the owner only), so errors surface here."""
        store = cls(path)
        await store._run(lambda db: None)
        return store

    @staticmethod
    def _buckets(db: sqlite3.Connection, agent: str, gone: float) -> list[tuple[float, int]]:
        rows = db.execute(
            "SELECT start, tokens FROM buckets WHERE agent = ? AND start > ? ORDER BY start",
            (agent, gone),
        ).fetchall()
        return [(float(start), int(tokens)) for start, tokens in rows]

    async def reserve(self, agent: str, tokens: int, budget: Budget, now: float) -> Reservation:
        start, gone = bucket_of(now, budget)

        def reserve(db: sqlite3.Connection) -> Reservation:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM buckets WHERE agent = ? AND start <= ?", (agent, gone))
                buckets = self._buckets(db, agent, gone)
                if sum(t for _, t in buckets) + tokens > budget.tokens:
                    raise BudgetExhausted(agent, retry_after(buckets, tokens, budget, now))
                db.execute(
                    "INSERT INTO buckets (agent, start, tokens) VALUES (?, ?, ?)"
                    " ON CONFLICT (agent, start) DO UPDATE SET tokens = tokens + excluded.tokens",
                    (agent, start, tokens),
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return Reservation(agent, start, tokens)

        return await self._run(reserve)

    async def settle(self, reservation: Reservation, tokens: int) -> None:
        if tokens == reservation.tokens:
            return
        await self._run(
            lambda db: db.execute(
                "UPDATE buckets SET tokens = MAX(0, tokens + ?) WHERE agent = ? AND start = ?",
                (tokens - reservation.tokens, reservation.agent, reservation.bucket),
            )
        )

    async def used(self, agent: str, budget: Budget, now: float) -> int:
        _, gone = bucket_of(now, budget)
        return await self._run(lambda db: sum(t for _, t in self._buckets(db, agent, gone)))

    async def close(self) -> None:
        """Close the connection in its thread (after queued queries), then let the thread end."""
        await self._database.close()
