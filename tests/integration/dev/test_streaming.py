"""``Accept: text/event-stream`` through a real ``clrk dev`` (ingress, in-process shim, real
sandboxes): each stdout line as the agent writes it, the outcome last (the agent's failure, the
deadline), a caller leaving kills the agent, and ``Accept: application/json`` stays buffered.

"As it is written" is checked by order, never by time: the agent (tests/agents/gated.sh) prints
``first`` and waits for a gate file the test makes only once it got the ``first`` event. Whether
the agent still runs is read from the host's processes: its command line holds its gate's path,
unique to the test (a pid written inside a bubblewrap sandbox would be its namespace's).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from httpx_sse import EventSource

from tests.support.clrk_dev import clrk_dev
from tests.support.processes import live_processes
from tests.support.streams import GATED, agent_manifests, eventually, gate_dir, outcome, read_events

STREAM = {"Accept": "text/event-stream"}


@dataclass
class Dev:
    url: str
    gates: Path
    _count: int = 0

    def gate(self) -> Path:
        """A fresh gate file's path (not made yet)."""
        self._count += 1
        return self.gates / f"gate-{self._count}"


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    root = tmp_path_factory.mktemp("streaming")
    with gate_dir() as gates:
        (gates / "open").touch()
        manifests = root / "manifests"
        manifests.mkdir()
        agents = {
            # "first", waits for the gate the body names, "second", "last" (no newline), exit 0
            "gated": ["sh", "-c", f'exec sh {GATED} "$(cat | jq -r .data.gate)"'],
            # the same through an open gate, leaving a child behind, exit 3
            "failing": ["sh", str(GATED), str(gates / "open"), "3"],
        }
        (manifests / "agents.yaml").write_text(agent_manifests(agents))
        with clrk_dev(["--apply", str(manifests), "--state-dir", str(root / "state")], os.environ) as running:
            yield Dev(running.url, gates)


def running(gate: Path) -> bool:
    """Whether any process of the agent waiting on ``gate`` is alive on this host."""
    return any(str(gate) in cmdline for cmdline in live_processes(names=("sh", "dash", "bash", "sleep")).values())


def post(agent: str, gate: Path | None = None, **headers: str) -> tuple[str, dict[str, object], dict[str, str]]:
    body = {} if gate is None else {"gate": str(gate)}
    return "/", body, {"X-Clrk-TaskAgent": f"default/{agent}", **headers}


async def test_each_line_comes_as_the_agent_writes_it_and_the_outcome_last(dev: Dev) -> None:
    gate = dev.gate()
    path, body, headers = post("gated", gate, **STREAM)
    async with (
        httpx.AsyncClient(base_url=dev.url, timeout=30) as client,
        client.stream("POST", path, json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = EventSource(response).aiter_sse()
        first = await anext(events)
        assert (first.event, first.data) == ("output", "first")
        assert not gate.exists() and running(gate), "the first line came while the agent waited"
        gate.touch()
        rest = [event async for event in events]
        invocation_id = response.headers["x-clrk-invocation-id"]
    assert [(e.event, e.data) for e in rest[:-1]] == [("output", "second"), ("output", "last")]
    ended = outcome([first, *rest])
    assert (ended.status, ended.exit_code, ended.invocation_id) == (200, 0, invocation_id)
    assert json.loads(rest[-1].data)["exitCode"] == 0


async def test_a_failing_agents_outcome_is_502_agent_failed_after_its_lines(dev: Dev) -> None:
    path, body, headers = post("failing", **STREAM)
    async with (
        httpx.AsyncClient(base_url=dev.url, timeout=30) as client,
        client.stream("POST", path, json=body, headers=headers) as response,
    ):
        events = await read_events(response)
    assert [e.data for e in events[:-1]] == ["first", "second", "last"], "the lines sent stay sent"
    ended = outcome(events)
    assert (ended.status, ended.exit_code) == (502, 3)
    assert ended.error is not None and ended.error["type"] == "agent_failed"


async def test_a_stream_cut_by_the_deadline_ends_with_504(dev: Dev) -> None:
    gate = dev.gate()  # never made: the agent waits until the deadline
    path, body, headers = post("gated", gate, **STREAM, **{"X-Clrk-Timeout-Ms": "1500"})
    async with (
        httpx.AsyncClient(base_url=dev.url, timeout=30) as client,
        client.stream("POST", path, json=body, headers=headers) as response,
    ):
        events = await read_events(response)
    assert [e.data for e in events[:-1]] == ["first"]
    ended = outcome(events)
    assert ended.status == 504
    assert ended.error is not None and ended.error["type"] == "deadline_exceeded"
    await eventually(lambda: not running(gate))


async def test_a_caller_leaving_mid_stream_kills_the_agent(dev: Dev) -> None:
    gate = dev.gate()  # never made: only the caller leaving ends the agent
    path, body, headers = post("gated", gate, **STREAM)
    async with (
        httpx.AsyncClient(base_url=dev.url, timeout=30) as client,
        client.stream("POST", path, json=body, headers=headers) as response,
    ):
        first = await anext(EventSource(response).aiter_sse())
        assert first.data == "first" and running(gate)
    await eventually(lambda: not running(gate))


async def test_accept_json_is_still_buffered(dev: Dev) -> None:
    path, body, headers = post("gated", dev.gates / "open", Accept="application/json")
    async with httpx.AsyncClient(base_url=dev.url, timeout=30) as client:
        response = await client.post(path, json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.text == "first\nsecond\nlast"
    assert not response.headers["content-type"].startswith("text/event-stream")
