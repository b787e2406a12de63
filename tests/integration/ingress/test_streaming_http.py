"""``Accept: text/event-stream`` the cluster's way: the ingress on a real socket, its
``HttpForwarder`` calling a real ``clrk-shim`` process over HTTP. Each line arrives while the agent
runs, a caller leaving closes the shim's request (the agent dies), and a shim that dies mid-stream
gets the caller an outcome of the ingress's own (502 ``agent_unavailable``), never a cut stream.

Order, not time: the agent (tests/agents/gated.sh) prints ``first`` and waits for a gate file the
test makes only after it got the ``first`` event; whether it still runs is read from the host's
processes (its command line holds its gate's path)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from httpx_sse import EventSource

from clrk.ingress import AgentTarget, CallerKeys, HttpForwarder, IngressSettings, create_app
from clrk_runtime.protocol.keys import namespace_key
from tests.support.processes import live_processes
from tests.support.readable import agents_dir
from tests.support.runtime import shim_port, shim_process
from tests.support.serving import uvicorn_serving
from tests.support.streams import eventually, gate_dir, outcome

AGENT = "team-a/gated"
GATED = agents_dir() / "gated.sh"
STREAM = {"X-Clrk-TaskAgent": AGENT, "Accept": "text/event-stream"}
PLATFORM_KEY = b"the-platform-key-of-this-test"


class LocalForwarder(HttpForwarder):
    """The cluster transport, the agent's Knative Service URL pointed at a local port."""

    def __init__(self, port: int) -> None:
        super().__init__({AGENT: AgentTarget(AGENT, 60.0)}, "cluster.local", PLATFORM_KEY)
        self.port = port

    def url(self, target: AgentTarget) -> str:
        return f"http://127.0.0.1:{self.port}/"


@dataclass
class Stack:
    client: httpx.AsyncClient
    shim: asyncio.subprocess.Process
    gates: Path


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    root = Path(tempfile.mkdtemp(prefix="clrk-test-"))
    root.chmod(0o711)
    keys = Path(tempfile.mkdtemp(prefix="clrk-test-keys-"))  # 0700: no sandbox reads it
    (keys / "request.key").write_bytes(namespace_key(PLATFORM_KEY, "request", "team-a"))
    command = ["sh", "-c", f'exec sh {GATED} "$(cat | jq -r .data.gate)"']
    env = {"CLRK_REQUEST_KEY_FILE": str(keys / "request.key")}  # as in a cluster: it runs signed requests only
    try:
        with gate_dir() as gates:
            args = ("--sandbox", "plain", "--timeout", "60s", "--agent", AGENT, "--", *command)
            async with shim_process(root, *args, env=env) as shim:
                forwarder = LocalForwarder(await shim_port(shim))
                app = create_app(forwarder, CallerKeys(open_mode=True), IngressSettings())
                config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning")
                async with (
                    uvicorn_serving(config) as port,
                    httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
                ):
                    yield Stack(client, shim, gates)
                await forwarder.aclose()
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(keys, ignore_errors=True)


def running(gate: Path) -> bool:
    return any(str(gate) in cmdline for cmdline in live_processes(names=("sh", "dash", "bash", "sleep")).values())


async def test_each_line_comes_through_the_http_shim_as_written(stack: Stack) -> None:
    gate = stack.gates / "gate"
    async with stack.client.stream("POST", "/", json={"gate": str(gate)}, headers=STREAM) as response:
        assert response.status_code == 200
        events = EventSource(response).aiter_sse()
        first = await anext(events)
        assert (first.event, first.data) == ("output", "first")
        assert not gate.exists() and running(gate), "the first line came while the agent waited"
        gate.touch()
        rest = [event async for event in events]
    assert [e.data for e in rest[:-1]] == ["second", "last"]
    ended = outcome([first, *rest])
    assert (ended.status, ended.exit_code) == (200, 0)
    assert ended.invocation_id == response.headers["x-clrk-invocation-id"]


async def test_a_caller_leaving_closes_the_shims_request_and_the_agent_dies(stack: Stack) -> None:
    gate = stack.gates / "never"
    async with stack.client.stream("POST", "/", json={"gate": str(gate)}, headers=STREAM) as response:
        first = await anext(EventSource(response).aiter_sse())
        assert first.data == "first" and running(gate)
    await eventually(lambda: not running(gate))


async def test_a_shim_dying_mid_stream_ends_it_with_the_ingress_outcome(stack: Stack) -> None:
    gate = stack.gates / "after-the-shim"
    try:
        async with stack.client.stream("POST", "/", json={"gate": str(gate)}, headers=STREAM) as response:
            events = EventSource(response).aiter_sse()
            assert (await anext(events)).data == "first"
            stack.shim.send_signal(signal.SIGKILL)
            rest = [event async for event in events]
    finally:
        gate.touch()  # the agent the dead shim left lets itself out
    ended = outcome(rest)
    assert [e.event for e in rest] == ["outcome"]
    assert ended.status == 502
    assert ended.error is not None and ended.error["type"] == "agent_unavailable"
    assert ended.invocation_id == response.headers["x-clrk-invocation-id"]
    assert rest[-1].id == "2", "numbered after the shim's last event"
