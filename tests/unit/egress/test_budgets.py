from __future__ import annotations

from pathlib import Path

import pytest

from clrk.egress.budgets import (
    BudgetExhausted,
    SqliteBudgets,
    bucket_of,
    estimate_tokens,
    retry_after,
)
from clrk.egress.config import Budget
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
