"""``clrk invoke --follow/--async`` and ``clrk invocations``, the real CLI (``python -m clrk``)
against a real ``clrk dev`` running real agents in real sandboxes.

"As it arrives" is checked by order, never by time: the agent (tests/agents/gated.sh) prints
``first`` and waits for a gate file, which the test makes only once the CLI's stdout gave it
``first`` while the CLI still runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.callback_receiver import CallbackReceiver
from tests.support.clrk_dev import clrk_dev
from tests.support.streams import GATED, agent_manifests, gate_dir

WAIT = 60
"""Seconds any one CLI run may take before the test fails (it normally takes one or two)."""


@dataclass
class Dev:
    url: str
    gates: Path
    _count: int = 0

    def gate(self) -> Path:
        """A fresh gate file path (not made yet) and the agent's argument to wait on it."""
        self._count += 1
        return self.gates / f"gate-{self._count}"


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    root = tmp_path_factory.mktemp("follow")
    with gate_dir() as gates:
        # The gate folder's one file "open" stays made: agents waiting on it go straight through.
        (gates / "open").touch()
        manifests = root / "manifests"
        manifests.mkdir()
        agents = {
            # gated GATE: "first", waits for GATE, "second", "last" (no newline); GATE from the body
            "gated": ["sh", "-c", f'exec sh {GATED} "$(cat | jq -r .data.gate)"'],
            "failing": ["sh", str(GATED), str(gates / "open"), "3"],
        }
        (manifests / "agents.yaml").write_text(agent_manifests(agents))
        args = ["--apply", str(manifests), "--state-dir", str(root / "state")]
        # Heartbeats every 50 ms on the events of async runs: their gated waits carry some, which
        # the CLI must skip (httpx-sse hands a heartbeat after an event with an id on as an event).
        with clrk_dev(args, {**os.environ, "CLRK_HEARTBEAT": "0.05"}) as running:
            yield Dev(running.url, gates)


def _clrk(dev: Dev, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "clrk", *args, "--url", dev.url]
    return subprocess.run(command, capture_output=True, text=True, timeout=WAIT, check=False)


def _start(dev: Dev, *args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "clrk", *args, "--url", dev.url]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _body(gate: Path) -> str:
    return json.dumps({"gate": str(gate)})


def _first_line_while_running(process: subprocess.Popen[str], gate: Path) -> tuple[str, str]:
    """The CLI's first stdout line, read while the agent waits on ``gate``; then the gate is
    opened and the rest read: (rest of stdout, stderr)."""
    assert process.stdout is not None and process.stderr is not None
    try:
        first = process.stdout.readline()
        assert first == "first\n", (first, process.stderr.read() if process.poll() is not None else "")
        assert process.poll() is None, "the first line came while the agent still ran"
        gate.touch()
        return process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_follow_prints_each_line_as_the_agent_writes_it(dev: Dev) -> None:
    gate = dev.gate()
    process = _start(dev, "invoke", "gated", "--follow", "--data", _body(gate))
    rest, stderr = _first_line_while_running(process, gate)
    assert process.returncode == 0, stderr
    assert rest == "second\nlast\n", "the last line, without its newline, comes before the outcome"
    assert stderr == ""


def test_a_failed_follow_exits_1_with_the_error_a_buffered_call_gives(dev: Dev) -> None:
    followed = _clrk(dev, "invoke", "failing", "--follow")
    buffered = _clrk(dev, "invoke", "failing")
    assert (followed.returncode, buffered.returncode) == (1, 1)
    assert followed.stdout == "first\nsecond\nlast\n", "the lines sent before the end stay sent"
    assert buffered.stdout == ""

    def without_id(line: str) -> str:
        return line.rpartition(" (invocation ")[0]

    assert followed.stderr.startswith("error: agent_failed: ")
    assert without_id(followed.stderr) == without_id(buffered.stderr)


def test_follow_verbose_reports_the_outcome(dev: Dev) -> None:
    ran = _clrk(dev, "invoke", "gated", "--follow", "-v", "--data", _body(dev.gates / "open"))
    assert ran.returncode == 0, ran.stderr
    lines = ran.stderr.splitlines()
    assert lines[0].startswith("invocation: ") and len(lines[0]) == len("invocation: ") + 36
    assert lines[1] == "status: 200 OK"
    assert lines[3] == "tokens: unknown"


def test_async_prints_the_id_and_invocations_show_its_status_events_and_result(dev: Dev) -> None:
    gate = dev.gate()
    started = _clrk(dev, "invoke", "gated", "--async", "--data", _body(gate))
    assert started.returncode == 0, started.stderr
    invocation = started.stdout.strip()
    assert started.stdout == invocation + "\n" and len(invocation) == 36

    early = _clrk(dev, "invocations", "result", invocation)
    assert early.returncode == 1
    assert early.stderr.startswith("error: result_not_ready: ")
    status = _clrk(dev, "invocations", "get", invocation)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"] in ("queued", "running")

    events = _start(dev, "invocations", "events", invocation)
    rest, stderr = _first_line_while_running(events, gate)
    assert events.returncode == 0, stderr
    assert rest == "second\nlast\n"

    result = _clrk(dev, "invocations", "result", invocation)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "first\nsecond\nlast", "the body a synchronous call would have had, exactly"
    document = json.loads(_clrk(dev, "invocations", "get", invocation).stdout)
    assert (document["invocationId"], document["status"], document["httpStatus"]) == (invocation, "succeeded", 200)
    again = _clrk(dev, "invocations", "events", invocation, "--verbose")
    assert again.returncode == 0, again.stderr
    assert again.stdout == "first\nsecond\nlast\n", "an ended run's events replay from the first line"
    assert "status: succeeded" in again.stderr


def test_async_follow_prints_the_id_on_stderr_then_follows(dev: Dev) -> None:
    gate = dev.gate()
    process = _start(dev, "invoke", "gated", "--async", "--follow", "--data", _body(gate))
    rest, stderr = _first_line_while_running(process, gate)
    assert process.returncode == 0, stderr
    assert rest == "second\nlast\n"
    assert stderr.startswith("invocation: ")


def test_cancel_ends_a_run_and_a_second_cancel_is_refused(dev: Dev) -> None:
    started = _clrk(dev, "invoke", "gated", "--async", "--data", _body(dev.gate()))  # its gate never opens
    invocation = started.stdout.strip()
    cancelled = _clrk(dev, "invocations", "cancel", invocation)
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
    again = _clrk(dev, "invocations", "cancel", invocation)
    assert again.returncode == 1
    assert again.stderr.startswith("error: already_finished: ")
    events = _clrk(dev, "invocations", "events", invocation)
    assert events.returncode == 1
    assert events.stderr.startswith("error: cancelled: ")


def test_async_with_a_callback_url_is_called_back(dev: Dev) -> None:
    with CallbackReceiver() as receiver:
        body = _body(dev.gates / "open")
        started = _clrk(dev, "invoke", "gated", "--async", "--callback-url", receiver.url, "--data", body)
        assert started.returncode == 0, started.stderr
        (callback,) = receiver.wait_for(1)
    event = json.loads(callback.body)
    assert event["data"]["invocationId"] == started.stdout.strip()
    assert event["data"]["status"] == "succeeded"


def test_an_unknown_invocation_is_one_clear_error(dev: Dev) -> None:
    for command in ("get", "result", "events", "cancel"):
        ran = _clrk(dev, "invocations", command, "01a2471d-8a1b-7429-960f-000000000000")
        assert ran.returncode == 1, command
        assert ran.stderr.startswith("error: unknown_invocation: "), (command, ran.stderr)


def test_an_id_that_is_not_one_is_a_usage_error(dev: Dev) -> None:
    ran = _clrk(dev, "invocations", "get", "../../healthz")
    assert ran.returncode == 2
    assert "expected an invocation id" in " ".join(ran.stderr.replace("│", " ").split())


def test_a_callback_without_async_is_a_usage_error(dev: Dev) -> None:
    ran = _clrk(dev, "invoke", "gated", "--callback-url", "https://hooks.example.com/x")
    assert ran.returncode == 2
    assert "add --async" in " ".join(ran.stderr.replace("│", " ").split())
