"""{{name}}'s own tests: the real entrypoint, through the real shim, with a stand-in claude."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

from clrk_runtime.testing import Result

Agent = Callable[..., Result]
Started = Callable[..., tuple[bytes, subprocess.CompletedProcess[bytes]]]


def test_the_answer_is_claudes_result(agent: Agent) -> None:
    result = agent({"prompt": "What is the capital of France?"})
    assert result.status == 200, result.stderr
    assert result.headers["content-type"] == "application/json"
    assert result.json() == {"answer": "Paris."}


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


def test_a_model_error_is_a_502_with_details_in_the_logs(agent: Agent) -> None:
    result = agent({"prompt": "hello"}, agent_env={"FAKE_CLAUDE": "error"})
    assert result.status == 502
    assert result.json()["error"]["type"] == "model_error"
    assert "Invalid API key" in result.stderr


@pytest.mark.parametrize("ready", [True, False], ids=["warm-start", "on-request"])
def test_it_says_it_is_ready_before_it_reads_its_request(started: Started, ready: bool) -> None:
    """Warm start: set up, one line on $CLRK_READY_FD, then stdin. Without $CLRK_READY_FD the
    same agent answers the same."""
    line, done = started({"prompt": "What is the capital of France?"}, ready=ready)
    assert done.returncode == 0, done.stderr
    assert line.endswith(b"\n") if ready else line == b""
    assert json.loads(done.stdout) == {"answer": "Paris."}


def test_warm_started_by_the_shim_it_answers_with_the_invocation_id_of_the_envelope(agent: Agent) -> None:
    """Started ahead, it has no $CLRK_METADATA_INVOCATION_ID: its errors take the id from the
    envelope (clrkinvocationid)."""
    result = agent({"prompt": "What is the capital of France?"}, warm_pool=1, warm_start=True)
    assert result.status == 200, result.stderr
    assert result.json() == {"answer": "Paris."}
    result = agent({"question": "?"}, warm_pool=1, warm_start=True)
    assert result.status == 400
    assert result.json()["error"]["invocationId"] == result.invocation_id
