"""Async invocations as a cluster runs them, each replica's side: what the Broker is sent
(:class:`BrokerDispatcher`, against a real HTTP server on port 0 in broker-ingress's place), and
what the worker routes decide for each delivery (unknown, final, queued, running with a live lease,
running with none, a dead letter, a forgery), against a real ``redis-server`` and the real shim
running a real agent (tests/agents/gated.sh, which waits at a gate file the test makes).

The pieces are the ones ``clrk ingress`` composes (:func:`clrk.cluster.async_runs.cluster_runs`)."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clrk.cluster.async_runs import ClusterRuns, cluster_runs
from clrk.ingress import CallerKeys, IngressSettings, RunRecord, create_app
from clrk.ingress.brokering import ACCEPTED_EVENT_TYPE, accepted_event, run_signature
from clrk.ingress.leases import RunLeases
from clrk.ingress.worker import DEAD_LETTER_PATH, DELIVERY_FAILED, RUNS_PATH
from clrk_runtime.protocol.envelope import build_envelope
from clrk_runtime.protocol.ids import is_invocation_id, new_invocation_id
from clrk_runtime.protocol.invocations import Status
from tests.support.async_ingress import LocalForwarder
from tests.support.redis_server import have_redis_server, redis_server
from tests.support.runtime import agent, serving, settings_for
from tests.support.serving import uvicorn_serving
from tests.support.streams import gate_dir

pytestmark = pytest.mark.skipif(not have_redis_server(), reason="redis-server is not installed")

AGENT = "team/bot"
KEY = b"platform-key-for-tests"
STDOUT = b"first\nsecond\nlast"


@dataclass
class Replica:
    """One ingress replica's async side, with a client for its app (in-process)."""

    parts: ClusterRuns
    client: httpx.AsyncClient
    redis_url: str

    async def stored(self, invocation_id: str) -> RunRecord:
        record = await self.parts.store.get(invocation_id)
        assert record is not None
        return record

    async def queued(self) -> RunRecord:
        """A run as the accepting route stores it (its Broker event not sent: the test delivers)."""
        invocation_id = new_invocation_id()
        envelope = build_envelope({}, b"{}", invocation_id=invocation_id, source="/clrk/ingress")
        record = RunRecord(invocation_id, AGENT, None, envelope.body, 30.0, time.time())
        await self.parts.store.create(record)
        return record

    async def deliver(self, invocation_id: str, path: str = RUNS_PATH, **extra: str) -> httpx.Response:
        headers, body = accepted_event(invocation_id, KEY)
        return await self.client.post(path, headers={**headers, **extra}, content=body)


@asynccontextmanager
async def other_leases(url: str, *, ttl_s: float, holder: str | None = None) -> AsyncIterator[RunLeases]:
    """Leases as another replica takes them (its own Redis client, closed at the end)."""
    client = aioredis.from_url(url)
    try:
        yield RunLeases(client, holder=holder, ttl_s=ttl_s)
    finally:
        await client.aclose()


@pytest.fixture
def gates() -> Iterator[Path]:
    with gate_dir() as folder:
        yield folder


@asynccontextmanager
async def replica(shim_root: Path, gate: Path, broker_url: str = "http://127.0.0.1:9/none") -> AsyncIterator[Replica]:
    """A real shim running gated.sh, Redis, and one replica's parts over them."""
    async with AsyncExitStack() as stack:
        url = stack.enter_context(redis_server())
        command = [agent("gated.sh"), str(gate)]
        shim, _ = await stack.enter_async_context(serving(settings_for("plain", shim_root, command, timeout=30)))
        forwarder = LocalForwarder(AGENT, int(str(shim.base_url).rsplit(":", 1)[1].rstrip("/")))
        stack.push_async_callback(forwarder.aclose)
        settings = IngressSettings(broker_url=broker_url, redis_url=url, run_lease_seconds=0.6, auth="open")
        parts = await cluster_runs(settings, forwarder, KEY)
        assert parts is not None
        stack.push_async_callback(parts.aclose)
        app = create_app(
            forwarder, CallerKeys(open_mode=True), settings, extra_routes=parts.worker.routes(), runs=parts.runs
        )
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress", timeout=30)
        stack.push_async_callback(client.aclose)
        yield Replica(parts, client, url)


@pytest.fixture
def shim_root() -> Iterator[Path]:
    """A temp root the sandbox uid can traverse (pytest's tmp_path is 0700 root)."""
    root = Path(tempfile.mkdtemp(prefix="clrk-test-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


# -- the Broker's side: what is posted ------------------------------------------------------


@asynccontextmanager
async def broker_ingress(status: int = 202) -> AsyncIterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A real HTTP server on port 0 answering every POST with ``status``; what it got."""
    got: list[tuple[dict[str, str], bytes]] = []

    async def take(request: Request) -> Response:
        got.append((dict(request.headers), await request.body()))
        return Response(status_code=status)

    app = Starlette(routes=[Route("/clrk/clrk-invocations", take, methods=["POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    async with uvicorn_serving(config) as port:
        yield f"http://127.0.0.1:{port}/clrk/clrk-invocations", got


async def test_an_accepted_run_is_one_binary_cloudevent_naming_only_its_id(shim_root: Path, gates: Path) -> None:
    async with broker_ingress() as (url, got), replica(shim_root, gates / "open", url) as ingress:
        answers = [
            await ingress.client.post("/", json={"secret": "body"}, headers={"X-Clrk-TaskAgent": AGENT, "Prefer": p})
            for p in ("respond-async", "respond-async, wait=10")
        ]
    assert [a.status_code for a in answers] == [202, 202], answers[0].text
    ids = [a.headers["x-clrk-invocation-id"] for a in answers]
    assert len(got) == 2
    for (headers, body), invocation_id in zip(got, ids, strict=True):
        assert headers["ce-specversion"] == "1.0" and headers["ce-type"] == ACCEPTED_EVENT_TYPE
        assert headers["ce-source"] == "/clrk/ingress" and headers["ce-subject"] == invocation_id
        assert headers["ce-clrkinvocationid"] == invocation_id
        assert headers["ce-clrksignature"] == run_signature(KEY, invocation_id)
        assert headers["content-type"] == "application/json"
        assert json.loads(body) == {"invocationId": invocation_id}, "the run itself stays in Redis"
        assert b"secret" not in body
        uuid.UUID(headers["ce-id"])
    assert got[0][0]["ce-id"] != got[1][0]["ce-id"], "each submission is its own event"


@pytest.mark.parametrize("status", [500, 400, None], ids=["refused", "bad-request", "unreachable"])
async def test_a_run_the_broker_does_not_take_is_refused_not_half_accepted(
    shim_root: Path, gates: Path, status: int | None
) -> None:
    async with AsyncExitStack() as stack:
        if status is None:
            async with broker_ingress() as (url, _):
                pass  # closed now: nothing listens there any more
        else:
            url, _got = await stack.enter_async_context(broker_ingress(status))
        ingress = await stack.enter_async_context(replica(shim_root, gates / "open", url))
        answer = await ingress.client.post("/", json={}, headers={"X-Clrk-TaskAgent": AGENT, "Prefer": "respond-async"})
        assert answer.status_code == 503 and answer.json()["error"]["type"] == "not_queued", answer.text
        assert answer.headers["retry-after"] == "1"
        assert await ingress.parts.store.unfinished() == [], "nothing is left queued that the Broker never took"


# -- the worker's decisions ------------------------------------------------------------------


async def test_unknown_final_and_forged_deliveries(shim_root: Path, gates: Path) -> None:
    (gates / "open").touch()
    async with replica(shim_root, gates / "open") as ingress:
        unknown = await ingress.deliver(new_invocation_id())
        assert unknown.status_code == 200 and unknown.content == b"", "nothing to do; no reply event"
        assert unknown.headers["x-clrk-invocation-status"] == "unknown"

        record = await ingress.queued()
        headers, body = accepted_event(record.invocation_id, b"another key")
        forged = await ingress.client.post(RUNS_PATH, headers=headers, content=body)
        assert forged.status_code == 403 and forged.json()["error"]["type"] == "bad_signature"
        headers, body = accepted_event(record.invocation_id, KEY)
        wrong = await ingress.client.post(RUNS_PATH, headers={**headers, "ce-type": "dev.other"}, content=body)
        assert wrong.status_code == 400 and "ce-type" in wrong.json()["error"]["message"]
        plain = await ingress.client.post(RUNS_PATH, json={"invocationId": record.invocation_id})
        assert plain.status_code == 400 and plain.json()["error"]["type"] == "invalid_event"
        assert (await ingress.stored(record.invocation_id)).status is Status.QUEUED, "none of them ran it"

        ran = await ingress.deliver(record.invocation_id)
        assert ran.status_code == 200 and ran.headers["x-clrk-invocation-status"] == "succeeded"
        done = await ingress.stored(record.invocation_id)
        assert (done.status, done.attempts, done.http_status) == (Status.SUCCEEDED, 1, 200)
        result = await ingress.parts.store.result(record.invocation_id)
        assert result is not None and result.body == STDOUT
        again = await ingress.deliver(record.invocation_id)
        assert again.status_code == 200 and again.headers["x-clrk-invocation-status"] == "succeeded"
        assert (await ingress.stored(record.invocation_id)).attempts == 1, "a final run is not run again"


async def test_a_run_under_way_is_held_by_its_lease_until_it_ends(shim_root: Path, gates: Path) -> None:
    gate = gates / "open"
    async with AsyncExitStack() as stack:
        ingress = await stack.enter_async_context(replica(shim_root, gate))
        record = await ingress.queued()
        first = asyncio.create_task(ingress.deliver(record.invocation_id))
        # The agent runs (its first line is in the run's log) and waits at the gate.
        async for number, line in ingress.parts.store.follow(record.invocation_id):
            assert (number, line) == (1, "first")
            break
        leases = await stack.enter_async_context(other_leases(ingress.redis_url, ttl_s=0.6))
        lived = time.monotonic()
        while time.monotonic() < lived + 3 * leases.ttl_s:  # three lease lives: renewed, not lapsed
            busy = await ingress.deliver(record.invocation_id)
            assert busy.status_code == 503 and busy.json()["error"]["type"] == "run_in_progress", busy.text
            assert int(busy.headers["retry-after"]) >= 1
            await asyncio.sleep(0.2)
        assert not first.done()
        gate.touch()
        ran = await first
        assert ran.status_code == 200 and ran.headers["x-clrk-invocation-status"] == "succeeded"
        assert await leases.remaining(record.invocation_id) is None, "released at the end"
        assert (await ingress.stored(record.invocation_id)).attempts == 1


async def test_a_running_run_without_a_lease_is_run_again(shim_root: Path, gates: Path) -> None:
    (gates / "open").touch()
    async with replica(shim_root, gates / "open") as ingress:
        record = await ingress.queued()
        # Its first replica claimed it and died: running, attempts 1, and a lease that lapses.
        started = record.replace(status=Status.RUNNING, started_at=time.time(), attempts=1)
        assert await ingress.parts.store.transition(record.invocation_id, frozenset({Status.QUEUED}), started)
        async with other_leases(ingress.redis_url, holder="dead-replica", ttl_s=0.5) as dead:
            assert await dead.acquire(record.invocation_id)
            busy = await ingress.deliver(record.invocation_id)
            assert busy.status_code == 503, "while the lease lives, its holder may still be running it"
            while await dead.remaining(record.invocation_id) is not None:
                await asyncio.sleep(0.05)
        ran = await ingress.deliver(record.invocation_id)
        assert ran.status_code == 200 and ran.headers["x-clrk-invocation-status"] == "succeeded", ran.text
        done = await ingress.stored(record.invocation_id)
        assert (done.status, done.attempts) == (Status.SUCCEEDED, 2)
        result = await ingress.parts.store.result(record.invocation_id)
        assert result is not None and result.body == STDOUT


async def test_a_dead_letter_fails_the_run_unless_it_ended_or_is_held(shim_root: Path, gates: Path) -> None:
    (gates / "open").touch()
    async with replica(shim_root, gates / "open") as ingress:
        held, given_up, finished = await ingress.queued(), await ingress.queued(), await ingress.queued()
        async with other_leases(ingress.redis_url, holder="other", ttl_s=30) as other:
            assert await other.acquire(held.invocation_id)
            answer = await ingress.deliver(held.invocation_id, DEAD_LETTER_PATH)
        assert answer.status_code == 200
        assert (await ingress.stored(held.invocation_id)).status is Status.QUEUED, "its holder will end it"

        assert (await ingress.deliver(finished.invocation_id)).status_code == 200
        answer = await ingress.deliver(finished.invocation_id, DEAD_LETTER_PATH)
        assert answer.status_code == 200 and (await ingress.stored(finished.invocation_id)).status is Status.SUCCEEDED

        answer = await ingress.deliver(given_up.invocation_id, DEAD_LETTER_PATH, **{"ce-knativeerrorcode": "503"})
        assert answer.status_code == 200 and answer.headers["x-clrk-invocation-status"] == "failed"
        failed = await ingress.stored(given_up.invocation_id)
        assert failed.status is Status.FAILED and failed.error is not None
        assert failed.error["type"] == DELIVERY_FAILED and "HTTP 503" in str(failed.error["message"])
        result = await ingress.parts.store.result(given_up.invocation_id)
        assert result is not None and result.http_status == 503
        assert json.loads(result.body)["error"]["type"] == DELIVERY_FAILED
        forged = await ingress.client.post(
            DEAD_LETTER_PATH, headers=accepted_event(held.invocation_id, b"x")[0], content=b"{}"
        )
        assert forged.status_code == 403


def test_the_signature_is_bound_to_the_invocation() -> None:
    first, second = new_invocation_id(), new_invocation_id()
    assert is_invocation_id(first)
    assert run_signature(KEY, first) != run_signature(KEY, second)
    assert run_signature(KEY, first) != run_signature(b"other", first)
