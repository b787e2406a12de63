from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from clrk.api.egress import Budget
from clrk.egress.budgets import (
    BudgetExhausted,
    SqliteBudgets,
    bucket_of,
    estimate_tokens,
    retry_after,
)
from clrk.egress.messages import ModelRequest

BUDGET = Budget(tokens=100, window_seconds=60)  # 60 buckets of one second


def test_estimate() -> None:
    assert estimate_tokens(ModelRequest(max_tokens=50), 401) == 50 + 101
    assert estimate_tokens(ModelRequest(), 0) == 4096


def test_buckets() -> None:
    assert bucket_of(12.7, BUDGET) == (12.0, 12.7 - 61)
    assert bucket_of(7200.5, Budget(tokens=1, window_seconds=3600)) == (7200.0, 7200.5 - 3660)


def test_retry_after_waits_for_enough_buckets_to_leave() -> None:
    buckets = [(0.0, 40), (10.0, 40), (20.0, 20)]
    assert retry_after(buckets, 30, BUDGET, now=30.0) == 31.0  # the first bucket frees enough
    assert retry_after(buckets, 70, BUDGET, now=30.0) == 41.0  # needs the second too
    assert retry_after([], 500, BUDGET, now=0.0) == 60.0  # can never fit


async def test_reserve_settle_and_window(tmp_path: Path) -> None:
    store = SqliteBudgets(tmp_path / "b.sqlite3")
    r1 = await store.reserve("a", 60, BUDGET, now=0.0)
    with pytest.raises(BudgetExhausted) as exc:
        await store.reserve("a", 60, BUDGET, now=1.0)
    assert exc.value.retry_after_s == pytest.approx(60.0)
    await store.reserve("b", 60, BUDGET, now=1.0)  # per agent
    await store.settle(r1, 10)
    await store.reserve("a", 60, BUDGET, now=2.0)
    assert await store.used("a", BUDGET, now=2.0) == 70
    assert await store.used("a", BUDGET, now=61.5) == 60  # the first bucket left the window
    await store.close()
    reopened = SqliteBudgets(tmp_path / "b.sqlite3")
    assert await reopened.used("a", BUDGET, now=2.0) == 70
    await reopened.close()


async def test_a_locked_database_never_freezes_the_event_loop(tmp_path: Path) -> None:
    """Another process holding the write lock makes a reservation wait (up to the 5 s busy
    timeout) in the store's worker thread: meanwhile the loop keeps serving everything else."""
    path = tmp_path / "b.sqlite3"
    store = await SqliteBudgets.open(path)
    assert path.stat().st_mode & 0o077 == 0
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, as another gateway mid-reservation holds it
    try:
        reserving = asyncio.create_task(store.reserve("a", 10, BUDGET, now=0.0))
        loop = asyncio.get_running_loop()
        ticks, longest, last = 0, 0.0, loop.time()
        while ticks < 30:  # a concurrent coroutine, ticking every 10 ms
            await asyncio.sleep(0.01)
            longest, last = max(longest, loop.time() - last), loop.time()
            ticks += 1
        assert not reserving.done()  # still waiting for the lock
        assert longest < 1.0  # and the loop never stalled on it (a blocking query would: 5 s)
    finally:
        holder.execute("COMMIT")
        holder.close()
    reservation = await asyncio.wait_for(reserving, 5)
    assert reservation.tokens == 10
    assert await store.used("a", BUDGET, now=0.0) == 10
    await store.close()


def test_settled_tokens_never_undercount() -> None:
    from clrk.egress.budgeting import settled_tokens
    from clrk.egress.messages import ModelUsage
    from clrk.egress.usage import ModelCall

    def call(status: int, **usage: object) -> ModelCall:
        c = ModelCall("i", "a", "h", ModelRequest(), 0.0, status=status)
        c.usage = ModelUsage(**usage)  # type: ignore[arg-type]
        return c

    assert settled_tokens(call(200, input_tokens=5, output_tokens=5, complete=True), 100) == 10
    assert settled_tokens(call(200, input_tokens=5), 100) == 100  # cut short: keep the estimate
    assert settled_tokens(call(200, input_tokens=5, error_type="overloaded_error"), 100) == 5
    assert settled_tokens(call(429, error_type="rate_limit_error"), 100) == 0
