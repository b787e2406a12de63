"""{{name}}'s own tests: the real entrypoint, through the real shim, with a stand-in claude."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

from clrk_runtime.testing import Result

Agent = Callable[..., Result]
Started = Callable[..., tuple[bytes, subprocess.CompletedProcess[bytes]]]


def test_each_claude_event_is_one_line_and_the_last_is_the_result(agent: Agent) -> None:
    result = agent({"prompt": "What is the capital of France?"})
    assert result.status == 200, result.stderr
    assert result.headers["content-type"] == "application/x-ndjson"
    events = [json.loads(line) for line in result.body.decode().splitlines()]
    assert [e["type"] for e in events] == ["system", "stream_event", "stream_event", "assistant", "result"]
    text = "".join(e["event"]["delta"]["text"] for e in events if e["type"] == "stream_event")
    assert text == "Paris."
    assert events[-1]["result"] == "Paris."


def test_a_body_without_prompt_is_the_callers_fault(agent: Agent) -> None:
    result = agent({"question": "?"})
    assert result.status == 400
    error = result.json()["error"]
    assert error["type"] == "bad_input"
    assert '"prompt"' in error["message"]
    assert error["invocationId"] == result.invocation_id


def test_a_body_that_is_not_json_is_refused(agent: Agent) -> None:
    result = agent(b"plain words")
    assert result.status == 400
    assert result.json()["error"]["type"] == "bad_input"


def test_a_model_error_is_a_502_ending_with_the_error(agent: Agent) -> None:
    result = agent({"prompt": "hello"}, agent_env={"FAKE_CLAUDE": "error"})
    assert result.status == 502
    *events, last = [json.loads(line) for line in result.body.decode().splitlines()]
    assert events[-1]["is_error"] is True, "the CLI's own events came first"
    assert last["error"]["type"] == "model_error"
    assert "Invalid API key" in last["error"]["message"]
    assert last["error"]["invocationId"] == result.invocation_id
    assert "Invalid API key" in result.stderr


def test_a_claude_that_cannot_start_is_a_502_naming_its_exit_status(agent: Agent) -> None:
    result = agent({"prompt": "hello"}, agent_env={"FAKE_CLAUDE": "crash"})
    assert result.status == 502
    assert result.json()["error"]["message"] == "claude failed: no answer (exit status 3)"
    assert "fake claude: cannot start" in result.stderr


@pytest.mark.parametrize("ready", [True, False], ids=["warm-start", "on-request"])
def test_it_says_it_is_ready_before_it_reads_its_request(started: Started, ready: bool) -> None:
    """Warm start: the CLI started and initialised, one line on $CLRK_READY_FD, then stdin.
    Without $CLRK_READY_FD the same agent answers the same."""
    line, done = started({"prompt": "What is the capital of France?"}, ready=ready)
    assert done.returncode == 0, done.stderr
    assert line.endswith(b"\n") if ready else line == b""
    events = [json.loads(text) for text in done.stdout.decode().splitlines()]
    assert [e["type"] for e in events] == ["system", "stream_event", "stream_event", "assistant", "result"]
    assert events[-1]["result"] == "Paris."


def test_started_ahead_a_claude_that_cannot_start_is_never_ready(started: Started) -> None:
    line, done = started({"prompt": "hello"}, env={"FAKE_CLAUDE": "crash"})
    assert line == b"", "no ready line"
    assert done.returncode != 0, "an exit clrk logs, then it starts another"
    assert "claude exited with status 3 before it was ready" in done.stderr.decode()


def test_warm_started_by_the_shim_it_answers_with_the_invocation_id_of_the_envelope(agent: Agent) -> None:
    """Started ahead, it has no $CLRK_METADATA_INVOCATION_ID: its errors take the id from the
    envelope (clrkinvocationid)."""
    result = agent({"prompt": "What is the capital of France?"}, warm_pool=1, warm_start=True)
    assert result.status == 200, result.stderr
    assert json.loads(result.body.decode().splitlines()[-1])["result"] == "Paris."
    result = agent({"question": "?"}, warm_pool=1, warm_start=True)
    assert result.status == 400
    assert result.json()["error"]["invocationId"] == result.invocation_id
