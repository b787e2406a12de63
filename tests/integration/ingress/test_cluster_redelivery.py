"""Async invocations across ingress replicas: a replica that dies mid-run, and a cancel from another.

Two replica processes (tests/support/async_ingress.py: what ``clrk ingress`` composes), one real
``redis-server``, the real shim running a real agent (tests/agents/gated.sh), and the Broker stand-in
(tests/support/broker.py) delivering to the replicas in turn, as a Service's endpoints take turns.
A replica is killed with SIGKILL while it runs a run: the Broker's delivery breaks, it delivers
again, the other replica finds the run's lease lapsed and runs it again (``attempts`` 2), and the
result is read through the survivor and through a replica started after."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from clrk.ingress.brokering import ACCEPTED_EVENT_TYPE, ID_EXTENSION
from clrk.ingress.worker import DEAD_LETTER_PATH, RUNS_PATH
from clrk_runtime.protocol.keys import namespace_key, namespace_of
from tests.support.broker import BrokerStandIn
from tests.support.redis_server import have_redis_server, redis_server
from tests.support.runtime import agent, serving, settings_for
from tests.support.streams import gate_dir

pytestmark = pytest.mark.skipif(not have_redis_server(), reason="redis-server is not installed")

AGENT = "team/bot"
REPO = Path(__file__).resolve().parents[3]
LEASE_S = 1.0


@dataclass
class Replica:
    process: asyncio.subprocess.Process
    url: str

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)


@dataclass
class Cluster:
    broker: BrokerStandIn
    broker_url: str
    redis_url: str
    shim_port: int
    key_file: Path
    stack: AsyncExitStack
    client: httpx.AsyncClient
    signed: bool = False

    async def replica(self) -> Replica:
        """One more replica process, serving; an endpoint of the Broker's subscriber from now."""
        argv = ["--redis-url", self.redis_url, "--broker-url", self.broker_url, "--shim-port", str(self.shim_port)]
        argv += ["--key-file", str(self.key_file), "--agent", AGENT, "--lease", str(LEASE_S)]
        argv += ["--sign"] if self.signed else []
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.support.async_ingress", *argv,
            cwd=REPO, stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        self.stack.push_async_callback(_stopped, process)
        assert process.stdout is not None
        async with asyncio.timeout(60):
            line = (await process.stdout.readline()).decode()
        match = re.match(r"listening on (\d+)", line)
        assert match, f"the replica did not start: {line!r}"
        replica = Replica(process, f"http://127.0.0.1:{match.group(1)}")
        self.broker.subscribers.append(replica.url)
        self.broker.dead_letter = self.broker.dead_letter or replica.url + DEAD_LETTER_PATH
        return replica

    async def accept(self, replica: Replica, data: dict[str, object]) -> str:
        answer = await self.client.post(
            replica.url + "/", json=data, headers={"X-Clrk-TaskAgent": AGENT, "Prefer": "respond-async"}
        )
        assert answer.status_code == 202, answer.text
        return str(answer.headers["x-clrk-invocation-id"])

    async def status(self, replica: Replica, invocation_id: str) -> dict[str, object]:
        answer = await self.client.get(f"{replica.url}/invocations/{invocation_id}")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def holder(self, invocation_id: str, replicas: list[Replica]) -> Replica | None:
        """The replica the Broker's delivery of ``invocation_id`` is held by right now."""
        target = self.broker.in_flight.get(self.broker.event_with(ID_EXTENSION, invocation_id) or "")
        return next((r for r in replicas if target is not None and target.startswith(r.url + "/")), None)


async def _stopped(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
    await process.wait()


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = 60.0) -> None:
    """Until ``check()`` answers true (AssertionError after ``within`` s)."""
    try:
        async with asyncio.timeout(within):
            while not await check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {within:g}s: {what}") from None


@pytest.fixture
def shim_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="clrk-test-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@asynccontextmanager
async def cluster(shim_root: Path, gates: Path, tmp_path: Path, *, signed: bool = False) -> AsyncIterator[Cluster]:
    """Redis, the shim, the Broker stand-in; ``signed``: the shim holds its namespace's request key
    and the replicas sign what they forward (as in a cluster)."""
    async with AsyncExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        key_file = tmp_path / "platform-key"
        key_file.write_text("a platform key for tests\n")
        command = [agent("gated_by_id.sh"), str(gates)]  # waits for <gates>/<the envelope's id>
        fields: dict[str, object] = {"timeout": 60}
        if signed:
            request_key = tmp_path / "request-key"
            request_key.write_bytes(namespace_key(key_file.read_bytes().strip(), "request", namespace_of(AGENT)))
            request_key.chmod(0o600)
            fields["request_key_file"] = request_key
        shim, _ = await stack.enter_async_context(serving(settings_for("plain", shim_root, command, **fields)))
        broker = BrokerStandIn(
            [], RUNS_PATH, filter_attributes={"type": ACCEPTED_EVENT_TYPE}, retry=10, backoff_delay=0.2, timeout=120
        )
        broker_url = await stack.enter_async_context(broker.serving())
        client = await stack.enter_async_context(httpx.AsyncClient(timeout=30))
        port = int(str(shim.base_url).rstrip("/").rsplit(":", 1)[1])
        yield Cluster(broker, broker_url, redis_url, port, key_file, stack, client, signed)


@pytest.fixture
def gates() -> Iterator[Path]:
    with gate_dir() as folder:
        yield folder


@pytest.mark.parametrize("signed", [pytest.param(False, id="unsigned"), pytest.param(True, id="signed")])
async def test_a_replica_killed_mid_run_leaves_the_run_to_another(
    shim_root: Path, gates: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, signed: bool
) -> None:
    async with cluster(shim_root, gates, tmp_path, signed=signed) as c:
        replicas = [await c.replica(), await c.replica()]
        invocation_id = await c.accept(replicas[0], {"n": 1})

        async def held() -> bool:
            holder = c.holder(invocation_id, replicas)
            return holder is not None and (await c.status(holder, invocation_id))["status"] == "running"

        await until(held, "a replica runs it")
        doomed = c.holder(invocation_id, replicas)
        assert doomed is not None
        (survivor,) = [r for r in replicas if r is not doomed]
        doomed.kill()

        async def taken_over() -> bool:
            document = await c.status(survivor, invocation_id)
            return document["attempts"] == 2 and document["status"] == "running"

        await until(taken_over, "the next delivery runs it again, once the dead replica's lease lapsed")

        async def first_killed() -> bool:
            return "caller went away; killed" in caplog.text

        await until(first_killed, "the first attempt's tree dies with its replica")
        (gates / invocation_id).touch()

        async def succeeded() -> bool:
            document = await c.status(survivor, invocation_id)
            assert document["status"] in ("running", "succeeded"), document
            return document["status"] == "succeeded"

        await until(succeeded, "the second attempt ends")
        replacement = await c.replica()
        for replica in (survivor, replacement):
            result = await c.client.get(f"{replica.url}/invocations/{invocation_id}/result")
            assert result.status_code == 200 and result.content == b"first\nsecond\nlast", result.text
        attempts = c.broker.attempts_for(c.broker.event_with(ID_EXTENSION, invocation_id) or "")
        assert attempts[0].status is None and attempts[0].target.startswith(doomed.url), "its delivery broke"
        assert attempts[-1].status == 200 and attempts[-1].target.startswith(survivor.url), attempts


async def test_a_cancel_through_one_replica_ends_the_run_on_the_other(
    shim_root: Path, gates: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with cluster(shim_root, gates, tmp_path) as c:
        replicas = [await c.replica(), await c.replica()]
        invocation_id = await c.accept(replicas[1], {"n": 2})

        async def held() -> bool:
            holder = c.holder(invocation_id, replicas)
            return holder is not None and (await c.status(holder, invocation_id))["status"] == "running"

        await until(held, "a replica runs it")
        runner = c.holder(invocation_id, replicas)
        (other,) = [r for r in replicas if r is not runner]
        cancelled = await c.client.delete(f"{other.url}/invocations/{invocation_id}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text

        async def killed() -> bool:  # (logged with the shim's own id: unsigned requests carry none it trusts)
            return "caller went away; killed" in caplog.text

        await until(killed, "the shim kills the agent's tree when the runner leaves")

        async def released() -> bool:
            return c.holder(invocation_id, replicas) is None

        await until(released, "the runner answers its delivery")
        event = c.broker.event_with(ID_EXTENSION, invocation_id) or ""
        assert [a.status for a in c.broker.attempts_for(event)] == [200], "delivered once; nothing to run again"
        assert runner is not None
        result = await c.client.get(f"{runner.url}/invocations/{invocation_id}/result")
        assert result.status_code == 409 and result.json()["error"]["type"] == "invocation_cancelled"
