"""The Redis budget backend: same contract as SQLite, atomic across clients (replicas)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clrk.api.egress import Budget
from clrk.egress.budgets import BudgetExhausted
from clrk.egress.redis_budgets import RedisBudgets

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")

BUDGET = Budget(tokens=100, window_seconds=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(5)


async def test_reserve_settle_window(redis_url: str) -> None:
    store = RedisBudgets(redis_url)
    try:
        r1 = await store.reserve("a", 60, BUDGET, now=1000.0)
        with pytest.raises(BudgetExhausted) as exc:
            await store.reserve("a", 60, BUDGET, now=1001.0)
        assert exc.value.retry_after_s == pytest.approx(60.0)
        await store.settle(r1, 10)
        await store.reserve("a", 60, BUDGET, now=1002.0)
        assert await store.used("a", BUDGET, now=1002.0) == 70
        assert await store.used("a", BUDGET, now=1061.5) == 60
    finally:
        await store.close()


async def test_replicas_do_not_overshoot(redis_url: str) -> None:
    replicas = [RedisBudgets(redis_url) for _ in range(4)]
    try:

        async def one(i: int) -> bool:
            try:
                await replicas[i % 4].reserve("shared", 30, BUDGET, now=time.time())
            except BudgetExhausted:
                return False
            return True

        results = await asyncio.gather(*(one(i) for i in range(20)))
        assert results.count(True) == 3
    finally:
        for r in replicas:
            await r.close()
