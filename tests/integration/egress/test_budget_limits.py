"""Budgets hold: concurrent calls reserve atomically (SQLite and Redis), and the database is private.

12 calls at once against a 20k-token budget, each with a 5k-token prompt: a call is admitted only
when its reservation (``max_tokens`` plus the body's bytes / 4) fits beside the others in flight,
so three pass and the window never counts more than the budget.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clrk.api.egress import EgressConfig
from clrk.egress.gateway import EgressGateway
from clrk.egress.redis_budgets import RedisBudgets
from clrk.egress.secrets import StaticSecrets
from tests.support.egress import TOKEN_KEY, Egress, GatewayCA, build_gateway, make_config
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.tlsca import TestCA

MESSAGES = "https://api.anthropic.com/v1/messages?beta=true"
PROMPT = "word " * 4000  # 20,000 bytes: about 5,000 tokens of English
BODY = {"model": "claude-test", "max_tokens": 64, "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
BUDGET = 20_000


@pytest.fixture
def egress_config() -> EgressConfig:
    return make_config(budget_tokens=BUDGET)


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = shutil.which("redis-server")
    assert server is not None, "redis-server is not installed"
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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


@pytest.fixture
async def redis_egress(
    tmp_path: Path, fake_anthropic: FakeAnthropic, test_ca: TestCA, gateway_ca: GatewayCA, real_key: str, redis_url: str
) -> AsyncIterator[Egress]:
    state = tmp_path / "redis-state"
    plain = build_gateway(
        state, fake_anthropic, test_ca, real_key, make_config(BUDGET), InMemorySpanExporter(), gateway_ca
    )
    store = RedisBudgets(redis_url)
    gateway = EgressGateway(
        plain.settings,
        make_config(BUDGET),
        StaticSecrets({("anthropic", "api-key"): real_key}),
        token_key=TOKEN_KEY,
        budgets=store,
        tracer_provider=TracerProvider(),
    )
    await gateway.start()
    try:
        yield Egress(gateway, fake_anthropic, InMemorySpanExporter(), state, real_key)
    finally:
        await gateway.stop()
        await store.close()


async def twelve_at_once(egress: Egress) -> tuple[list[int], int]:
    egress.fake.behaviour.input_tokens = 5_000
    egress.fake.behaviour.chunk_delay = 0.05  # keep them in flight together

    async def one(i: int) -> int:
        async with egress.client(egress.proxy_url(f"inv-c{i}")) as client:
            return (await client.post(MESSAGES, json=BODY)).status_code

    statuses = await asyncio.gather(*(one(i) for i in range(12)))
    spent = sum(c.usage.total_tokens for i in range(12) for c in egress.gateway.usage.calls(f"inv-c{i}"))
    return list(statuses), spent


async def test_twelve_concurrent_5k_calls_stay_within_20k_with_sqlite(egress: Egress) -> None:
    statuses, spent = await twelve_at_once(egress)
    assert statuses.count(200) == 3 and statuses.count(429) == 9, statuses
    assert len(egress.fake.messages_requests()) == 3
    assert spent <= BUDGET


async def test_twelve_concurrent_5k_calls_stay_within_20k_with_redis(redis_egress: Egress) -> None:
    statuses, spent = await twelve_at_once(redis_egress)
    assert statuses.count(200) == 3 and statuses.count(429) == 9, statuses
    assert len(redis_egress.fake.messages_requests()) == 3
    assert spent <= BUDGET


async def test_every_file_of_the_budgets_database_is_private_from_the_first_start(
    tmp_path: Path, fake_anthropic: FakeAnthropic, test_ca: TestCA, gateway_ca: GatewayCA, real_key: str
) -> None:
    state = tmp_path / "state"
    egress_dir = state / "egress"
    egress_dir.mkdir(parents=True)
    # A gateway killed mid-run leaves its -wal and -shm beside the database: here with mode 0644,
    # as they came out of a start that created the database before narrowing it.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    db = sqlite3.connect(scratch / "budgets.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE buckets (agent TEXT NOT NULL, start REAL NOT NULL, tokens INTEGER NOT NULL,"
               " PRIMARY KEY (agent, start)) WITHOUT ROWID")  # fmt: skip
    db.execute("INSERT INTO buckets VALUES ('default/bot', 0, 1)")
    for file in scratch.iterdir():  # copied while the writer still holds them open, as a crash leaves them
        shutil.copyfile(file, egress_dir / file.name)
        (egress_dir / file.name).chmod(0o644)
    db.close()
    gateway = build_gateway(
        state, fake_anthropic, test_ca, real_key, make_config(BUDGET), InMemorySpanExporter(), gateway_ca
    )
    await gateway.start()
    egress = Egress(gateway, fake_anthropic, InMemorySpanExporter(), state, real_key)
    try:
        async with egress.client() as client:
            assert (await client.post(MESSAGES, json=BODY)).status_code == 200
        modes = {p.name: p.stat().st_mode & 0o777 for p in egress_dir.glob("budgets.sqlite3*")}
    finally:
        await gateway.stop()
    assert modes == {"budgets.sqlite3": 0o600, "budgets.sqlite3-wal": 0o600, "budgets.sqlite3-shm": 0o600}


async def test_a_first_start_creates_no_file_of_it_wider_than_0600(
    tmp_path: Path, fake_anthropic: FakeAnthropic, test_ca: TestCA, gateway_ca: GatewayCA, real_key: str
) -> None:
    state = tmp_path / "state"
    gateway = build_gateway(
        state, fake_anthropic, test_ca, real_key, make_config(BUDGET), InMemorySpanExporter(), gateway_ca
    )
    await gateway.start()
    egress = Egress(gateway, fake_anthropic, InMemorySpanExporter(), state, real_key)
    try:
        async with egress.client() as client:
            assert (await client.post(MESSAGES, json=BODY)).status_code == 200
        modes = {p.name: p.stat().st_mode & 0o777 for p in (state / "egress").glob("budgets.sqlite3*")}
    finally:
        await gateway.stop()
    assert modes == {"budgets.sqlite3": 0o600, "budgets.sqlite3-wal": 0o600, "budgets.sqlite3-shm": 0o600}


async def test_calls_that_never_reach_the_upstream_release_their_reservation(
    tmp_path: Path, test_ca: TestCA, gateway_ca: GatewayCA, real_key: str
) -> None:
    # The upstream's certificate fails verification: nothing is sent, nothing can be charged.
    # Each call reserves ~64 + 5k of a 20k budget; kept, the fourth would get the budget's 429.
    async with FakeAnthropic(test_ca.issue(["api.example.net"], name="wrong")) as wrong:
        state = tmp_path / "state"
        config = make_config(BUDGET)
        gateway = build_gateway(state, wrong, test_ca, real_key, config, InMemorySpanExporter(), gateway_ca)
        await gateway.start()
        egress = Egress(gateway, wrong, InMemorySpanExporter(), state, real_key)
        try:
            async with egress.client() as client:
                statuses = [(await client.post(MESSAGES, json=BODY)).status_code for _ in range(6)]
        finally:
            await gateway.stop()
    assert statuses == [502] * 6
    assert wrong.requests == []
