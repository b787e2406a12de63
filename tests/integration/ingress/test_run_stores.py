"""The run stores' contract: the same tests against SQLite (``clrk dev``) and Redis (a cluster).

Redis runs as a real ``redis-server`` (:mod:`tests.support.redis_server`); several store instances
on it stand for several ingress replicas. For SQLite, "another instance" is a new store on the
same file (what a restart of ``clrk dev`` opens); its followers are woken in-process, so a live
follower there is woken by a write through the same instance.
"""

from __future__ import annotations

import asyncio
import dataclasses
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from clrk.ingress.records import CallbackState, Result, RunRecord, RunStore, Usage
from clrk.ingress.redis_runs import RedisRunStore
from clrk.ingress.run_files import FileRunStore
from clrk_runtime.protocol.ids import new_invocation_id
from clrk_runtime.protocol.invocations import FINAL, Status
from tests.support.redis_server import have_redis_server, redis_server

RETENTION_S = 3600.0
CAP = 1 << 30
NEVER_S = 3600.0
"""Followers here read again only when woken (the stores' periodic recheck would hide a missed wake-up)."""


@dataclass
class Backing:
    """One store's backing (a file, a Redis), and how to open stores on it."""

    name: str
    make: Callable[..., RunStore]
    """A new store instance on the backing (``max_result_bytes_total=`` to set the cap)."""
    waiting: Callable[[], Awaitable[int]]
    """How many followers wait for a write right now (registered watchers; blocked Redis clients)."""
    live_writer: Callable[[RunStore], RunStore]
    """The store whose writes wake a follower of the given one (another replica where it can be)."""


@pytest.fixture(params=["sqlite", "redis"])
async def backing(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backing]:
    stores: list[Any] = []
    try:
        if request.param == "sqlite":
            path = tmp_path / "state" / "invocations.sqlite3"

            def make_file(max_result_bytes_total: int = CAP) -> RunStore:
                store = FileRunStore(path, retention_s=RETENTION_S, max_result_bytes_total=max_result_bytes_total)
                store.FOLLOW_RECHECK_S = NEVER_S
                stores.append(store)
                return store

            async def watchers() -> int:
                return sum(len(w) for s in stores for w in s._watchers.values())

            yield Backing("sqlite", make_file, watchers, lambda store: store)
        else:
            if not have_redis_server():
                pytest.skip("redis-server is not installed")
            with redis_server() as url:
                admin: Any = aioredis.from_url(url)
                try:

                    def make_redis(max_result_bytes_total: int = CAP) -> RunStore:
                        store = RedisRunStore(
                            url,
                            retention_s=RETENTION_S,
                            stream_max_lines=10_000,
                            max_result_bytes_total=max_result_bytes_total,
                        )
                        store.FOLLOW_RECHECK_S = NEVER_S
                        stores.append(store)
                        return store

                    async def blocked() -> int:
                        return int((await admin.info("clients"))["blocked_clients"])

                    yield Backing("redis", make_redis, blocked, lambda store: make_redis())
                finally:
                    for store in stores:
                        await store.aclose()
                    stores.clear()
                    await admin.aclose()
    finally:
        for store in stores:
            await store.aclose()


def queued(**changes: Any) -> RunRecord:
    return RunRecord(
        invocation_id=new_invocation_id(),
        agent="team/bot",
        caller="alice",
        envelope=b'{"specversion":"1.0","data":{"q":1}}',
        timeout_s=60.0,
        created_at=time.time(),
    ).replace(**changes)


def succeeded(record: RunRecord, **changes: Any) -> RunRecord:
    return record.replace(status=Status.SUCCEEDED, http_status=200, exit_code=0, content_type="text/plain", **changes)


RESULT = Result(http_status=200, content_type="text/plain", body=b"done\n")


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Wait for a state of the store's backing that the test cannot be told about (bounded by the
    test's timeout): checked, not slept for."""
    while not await condition():
        await asyncio.sleep(0.01)


async def test_every_field_round_trips(backing: Backing) -> None:
    store = backing.make()
    now = time.time()
    record = RunRecord(
        invocation_id=new_invocation_id(),
        agent="team/bot",
        caller="alice",
        envelope=bytes(range(256)),
        timeout_s=1800.0,
        created_at=now - 5,
        status=Status.RUNNING,
        started_at=now - 4,
        finished_at=now - 1,
        expires_at=now + 99,
        result_expired=False,
        http_status=502,
        exit_code=3,
        content_type="application/json",
        error={"type": "agent_failed", "message": "exit 3", "nested": [1, "ü"]},
        usage=Usage(5, 6, 7, 8, 9),
        callback=CallbackState(
            "https://hooks.example/x", "failed", 4, last_status=500, last_error="boom", delivered_at=now
        ),
        attempts=2,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        extra={"lease": "replica-1", "n": 3},
    )
    defaults = RunRecord("i", "a", None, b"", 1.0, 0.0)
    for field in dataclasses.fields(RunRecord):
        if field.name != "result_expired":
            assert getattr(record, field.name) != getattr(defaults, field.name), f"give {field.name} a value"
    await store.create(record)
    assert await store.get(record.invocation_id) == record
    assert await backing.make().get(record.invocation_id) == record

    changed = record.replace(attempts=3, usage=Usage(1), callback=None, error=None, extra={}, caller=None)
    await store.update(changed)
    assert await backing.make().get(record.invocation_id) == changed
    assert await store.get(new_invocation_id()) is None
    with pytest.raises(ValueError, match="exists already"):
        await store.create(record)


async def test_one_of_concurrent_transitions_wins(backing: Backing) -> None:
    replicas = [backing.make() for _ in range(3)]
    record = queued()
    await replicas[0].create(record)

    async def start(i: int) -> bool:
        started = record.replace(status=Status.RUNNING, started_at=time.time(), attempts=i)
        return await replicas[i % 3].transition(record.invocation_id, frozenset({Status.QUEUED}), started)

    won = await asyncio.gather(*(start(i) for i in range(1, 13)))
    assert won.count(True) == 1
    stored = await replicas[1].get(record.invocation_id)
    assert stored is not None and stored.status is Status.RUNNING
    assert stored.attempts == won.index(True) + 1

    running = stored
    cancel = replicas[0].transition(
        record.invocation_id,
        frozenset({Status.QUEUED, Status.RUNNING}),
        running.replace(status=Status.CANCELLED, finished_at=time.time()),
    )
    finish = replicas[1].finish(succeeded(running, finished_at=time.time()), RESULT)
    assert sorted(await asyncio.gather(cancel, finish)) == [False, True]


async def test_an_ended_run_stays_ended(backing: Backing) -> None:
    store = backing.make()
    record = queued()
    await store.create(record)
    running = record.replace(status=Status.RUNNING, started_at=time.time())
    assert await store.transition(record.invocation_id, frozenset({Status.QUEUED}), running)
    assert await store.transition(
        record.invocation_id, frozenset({Status.RUNNING}), running.replace(status=Status.CANCELLED)
    )

    assert not await store.finish(succeeded(running), RESULT)
    assert await store.result(record.invocation_id) is None
    await store.update(running.replace(attempts=7))
    cancelled = await store.get(record.invocation_id)
    assert cancelled is not None and cancelled.status is Status.CANCELLED and cancelled.attempts == 0
    assert cancelled.finished_at is not None
    assert cancelled.expires_at == pytest.approx(cancelled.finished_at + RETENTION_S)
    assert await store.unfinished() == []

    delivered = cancelled.replace(callback=CallbackState("https://hooks.example/", "delivered", 1))
    await store.update(delivered)
    assert await store.get(record.invocation_id) == delivered
    assert not await store.transition(record.invocation_id, frozenset({Status.QUEUED}), running)
    assert not await store.transition(record.invocation_id, frozenset(), running)
    with pytest.raises(ValueError, match="final record"):
        await store.finish(running, RESULT)
    with pytest.raises(ValueError, match="given for"):
        await store.transition(new_invocation_id(), frozenset({Status.CANCELLED}), running)


async def test_finish_keeps_the_result(backing: Backing) -> None:
    store = backing.make()
    record = queued()
    await store.create(record)
    assert await store.result(record.invocation_id) is None
    body = bytes(range(256)) * 3
    assert await store.finish(succeeded(record), Result(502, "application/octet-stream", body))
    assert await backing.make().result(record.invocation_id) == Result(502, "application/octet-stream", body)
    ended = await store.get(record.invocation_id)
    assert ended is not None and ended.finished_at is not None and ended.expires_at is not None
    assert not await store.finish(succeeded(record), RESULT)


LINES = ["first", "ünïcode ✓", "", 'tab\tand "quotes"', "last"]


async def test_follow_from_the_start_from_the_middle_and_late(backing: Backing) -> None:
    store = backing.make()
    record = queued()
    await store.create(record)
    await store.append_output(record.invocation_id, LINES[:2])
    await store.append_output(record.invocation_id, LINES[2:])
    await store.append_output(record.invocation_id, [])
    assert await store.finish(succeeded(record), RESULT)
    await store.append_output(record.invocation_id, ["after the end"])

    numbered = list(enumerate(LINES, start=1))
    for reader in (store, backing.make()):
        assert [line async for line in reader.follow(record.invocation_id)] == numbered
        assert [line async for line in reader.follow(record.invocation_id, after=3)] == numbered[3:]
        assert [line async for line in reader.follow(record.invocation_id, after=5)] == []
    assert [line async for line in store.follow(new_invocation_id())] == []


async def test_a_follower_gets_each_line_as_it_is_written(backing: Backing) -> None:
    reader = backing.make()
    writer = backing.live_writer(reader)
    record = queued()
    await writer.create(record)
    await writer.append_output(record.invocation_id, ["before"])
    got: asyncio.Queue[tuple[int, str]] = asyncio.Queue()

    async def follow() -> None:
        async with aclosing(reader.follow(record.invocation_id)) as lines:
            async for line in lines:
                await got.put(line)

    follower = asyncio.create_task(follow())
    assert await got.get() == (1, "before")
    await until(lambda: _waiting_at_least(backing, 1))
    await writer.append_output(record.invocation_id, ["one", "two"])
    assert [await got.get(), await got.get()] == [(2, "one"), (3, "two")]
    await writer.append_output(record.invocation_id, ["three"])
    assert await got.get() == (4, "three")
    assert await writer.finish(succeeded(record), RESULT)
    await follower
    assert got.empty()


async def _waiting_at_least(backing: Backing, n: int) -> bool:
    return await backing.waiting() >= n


async def test_a_follower_ends_when_the_run_is_cancelled(backing: Backing) -> None:
    reader = backing.make()
    writer = backing.live_writer(reader)
    record = queued()
    await writer.create(record)
    follower = asyncio.create_task(_collect(reader.follow(record.invocation_id)))
    await until(lambda: _waiting_at_least(backing, 1))
    assert await writer.transition(
        record.invocation_id, frozenset({Status.QUEUED}), record.replace(status=Status.CANCELLED)
    )
    assert await follower == []


async def _collect(lines: AsyncIterator[tuple[int, str]]) -> list[tuple[int, str]]:
    return [line async for line in lines]


async def test_a_reader_that_stops_leaves_nothing_behind(backing: Backing) -> None:
    store = backing.make()
    record = queued()
    await store.create(record)
    await store.append_output(record.invocation_id, ["a", "b"])
    tasks = asyncio.all_tasks()

    async with aclosing(store.follow(record.invocation_id)) as lines:
        async for number, _ in lines:
            if number == 1:
                break
    assert asyncio.all_tasks() == tasks
    assert await backing.waiting() == 0

    follower = asyncio.create_task(_collect(store.follow(record.invocation_id, after=2)))
    await until(lambda: _waiting_at_least(backing, 1))
    follower.cancel()
    with pytest.raises(asyncio.CancelledError):
        await follower
    await until(lambda: _waiting_at_most(backing, 0))
    assert asyncio.all_tasks() == tasks


async def _waiting_at_most(backing: Backing, n: int) -> bool:
    return await backing.waiting() <= n


async def test_expiry_drops_ended_runs(backing: Backing) -> None:
    store = backing.make()
    now = time.time()
    old, young, running = queued(), queued(), queued()
    for record in (old, young, running):
        await store.create(record)
        await store.append_output(record.invocation_id, ["x"])
    assert await store.finish(succeeded(old, finished_at=now, expires_at=now + 10), RESULT)
    assert await store.finish(succeeded(young, finished_at=now, expires_at=now + 1000), RESULT)

    assert await store.expire(now + 5) == 0
    assert await store.expire(now + 100) == 1
    assert await store.get(old.invocation_id) is None
    assert await store.result(old.invocation_id) is None
    assert [line async for line in store.follow(old.invocation_id)] == []
    assert await store.result(young.invocation_id) == RESULT
    assert [line async for line in store.follow(young.invocation_id)] == [(1, "x")]
    assert [r.invocation_id for r in await store.unfinished()] == [running.invocation_id]
    assert await store.expire(now + 100) == 0


async def test_the_size_cap_drops_the_oldest_results(backing: Backing) -> None:
    store = backing.make(max_result_bytes_total=250)
    now = time.time()
    runs = [queued() for _ in range(3)]
    for i, record in enumerate(runs):
        await store.create(record)
        assert await store.finish(succeeded(record, finished_at=now + i), Result(200, "text/plain", b"r" * 100))

    assert await store.expire(now) == 1
    first = await store.get(runs[0].invocation_id)
    assert first is not None and first.result_expired and first.status is Status.SUCCEEDED
    assert await store.result(runs[0].invocation_id) is None
    for record in runs[1:]:
        kept = await store.get(record.invocation_id)
        assert kept is not None and not kept.result_expired
        assert await store.result(record.invocation_id) == Result(200, "text/plain", b"r" * 100)

    await store.update(first.replace(result_expired=False, attempts=2))
    again = await store.get(runs[0].invocation_id)
    assert again is not None and again.result_expired and again.attempts == 2
    assert await store.expire(now) == 0


async def test_a_new_instance_sees_everything(backing: Backing) -> None:
    store = backing.make()
    done, waiting = queued(), queued(created_at=time.time() + 1)
    for record in (done, waiting):
        await store.create(record)
    await store.append_output(done.invocation_id, ["one", "two"])
    assert await store.finish(succeeded(done), RESULT)
    finished = await store.get(done.invocation_id)
    await store.aclose()

    again = backing.make()
    assert await again.get(done.invocation_id) == finished
    assert await again.result(done.invocation_id) == RESULT
    assert [line async for line in again.follow(done.invocation_id)] == [(1, "one"), (2, "two")]
    assert await again.unfinished() == [waiting]


async def test_unfinished_lists_queued_and_running_runs_oldest_first(backing: Backing) -> None:
    store = backing.make()
    now = time.time()
    runs = [queued(created_at=now + i) for i in range(4)]
    for record in reversed(runs):
        await store.create(record)
    running = runs[1].replace(status=Status.RUNNING, started_at=now)
    assert await store.transition(runs[1].invocation_id, frozenset({Status.QUEUED}), running)
    assert await store.finish(succeeded(runs[2]), RESULT)
    failed = runs[3].replace(status=Status.FAILED, http_status=502, finished_at=now)
    assert await store.transition(runs[3].invocation_id, frozenset({Status.QUEUED}), failed)
    assert await store.unfinished() == [runs[0], running]
    assert all(r.status not in FINAL for r in await store.unfinished())


async def test_no_call_blocks_the_loop(backing: Backing) -> None:
    """A store's I/O runs off the loop: a ticker keeps ticking while a big result is written and
    read (a store blocking the loop would give it no turn until the call returned)."""
    store = backing.make()
    record = queued()
    await store.create(record)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    body = b"x" * (48 << 20)
    task = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(0)
        before = ticks
        assert await store.finish(succeeded(record), Result(200, "application/octet-stream", body))
        during_finish = ticks - before
        before = ticks
        stored = await store.result(record.invocation_id)
        during_read = ticks - before
    finally:
        task.cancel()
    assert stored is not None and stored.body == body
    assert during_finish > 2 and during_read > 2


async def test_the_file_is_the_owners_alone(tmp_path: Path) -> None:
    path = tmp_path / "state" / "invocations.sqlite3"
    path.parent.mkdir()
    path.touch(mode=0o644)
    path.chmod(0o644)
    store = await FileRunStore.open(path, retention_s=RETENTION_S, max_result_bytes_total=CAP)
    try:
        record = queued()
        await store.create(record)
        await store.append_output(record.invocation_id, ["secret output"])
        files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
        for file in files:
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    finally:
        await store.aclose()


async def test_closing_the_store_ends_its_followers(backing: Backing) -> None:
    store = backing.make()
    record = queued()
    await store.create(record)
    await store.append_output(record.invocation_id, ["a"])
    follower = asyncio.create_task(_collect(store.follow(record.invocation_id)))
    await until(lambda: _waiting_at_least(backing, 1))
    await store.aclose()
    assert await follower == [(1, "a")]
