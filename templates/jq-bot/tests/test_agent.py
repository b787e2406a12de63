"""{{name}}'s own tests: the real entrypoint, through the real shim, with a stand-in claude."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

from clrk_runtime.testing import Result

Agent = Callable[..., Result]
Started = Callable[..., tuple[bytes, subprocess.CompletedProcess[bytes]]]
PEOPLE = [
    {"name": "alice", "age": 30, "role": "eng"},
    {"name": "bob", "age": 42, "role": "pm"},
    {"name": "carol", "age": 25, "role": "eng"},
]


def test_the_filter_is_checked_by_running_jq(agent: Agent) -> None:
    result = agent({"input": PEOPLE, "want": "names of engineers, ascending by age"})
    assert result.status == 200, result.stderr
    assert result.headers["content-type"] == "application/json"
    assert result.json() == {
        "filter": '[.[] | select(.role == "eng")] | sort_by(.age) | map(.name)',
        "output": ["carol", "alice"],
    }


def test_a_body_without_want_is_the_callers_fault(agent: Agent) -> None:
    result = agent({"input": PEOPLE})
    assert result.status == 400
    error = result.json()["error"]
    assert error["type"] == "bad_input"
    assert '"want"' in error["message"]
    assert error["invocationId"] == result.invocation_id


def test_a_body_that_is_not_an_object_is_refused(agent: Agent) -> None:
    result = agent(["not", "an", "object"])
    assert result.status == 400
    assert result.json()["error"]["type"] == "bad_input"


def test_a_model_error_is_a_502_with_details_in_the_logs(agent: Agent) -> None:
    result = agent({"input": PEOPLE, "want": "anything"}, agent_env={"FAKE_CLAUDE": "error"})
    assert result.status == 502
    assert result.json()["error"]["type"] == "model_error"
    assert "Invalid API key" in result.stderr


def test_a_claude_that_cannot_start_is_a_502_naming_its_exit_status(agent: Agent) -> None:
    result = agent({"input": PEOPLE, "want": "anything"}, agent_env={"FAKE_CLAUDE": "crash"})
    assert result.status == 502
    assert result.json()["error"]["message"] == "claude exited with status 3 without a result"
    assert "fake claude: cannot start" in result.stderr


@pytest.mark.parametrize("ready", [True, False], ids=["warm-start", "on-request"])
def test_it_says_it_is_ready_before_it_reads_its_request(started: Started, ready: bool) -> None:
    """Warm start: the CLI started and initialised, one line on $CLRK_READY_FD, then stdin.
    Without $CLRK_READY_FD the same agent answers the same."""
    line, done = started({"input": PEOPLE, "want": "names of engineers, ascending by age"}, ready=ready)
    assert done.returncode == 0, done.stderr
    assert line.endswith(b"\n") if ready else line == b""
    assert json.loads(done.stdout)["output"] == ["carol", "alice"]


def test_started_ahead_a_claude_that_cannot_start_is_never_ready(started: Started) -> None:
    line, done = started({"input": PEOPLE, "want": "anything"}, env={"FAKE_CLAUDE": "crash"})
    assert line == b"", "no ready line"
    assert done.returncode != 0, "an exit clrk logs, then it starts another"
    assert "claude exited with status 3 before it was ready" in done.stderr.decode()


def test_warm_started_by_the_shim_it_answers_with_the_invocation_id_of_the_envelope(agent: Agent) -> None:
    """Started ahead, it has no $CLRK_METADATA_INVOCATION_ID: its errors take the id from the
    envelope (clrkinvocationid)."""
    result = agent({"input": PEOPLE, "want": "names of engineers"}, warm_pool=1, warm_start=True)
    assert result.status == 200, result.stderr
    assert result.json()["output"] == ["carol", "alice"]
    result = agent({"input": PEOPLE}, warm_pool=1, warm_start=True)
    assert result.status == 400
    assert result.json()["error"]["invocationId"] == result.invocation_id
