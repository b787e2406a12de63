"""{{name}}'s own tests: the real entrypoint, through the real shim, with a stand-in claude."""

from __future__ import annotations

import json
from collections.abc import Callable

from clrk_runtime.testing import Result

Agent = Callable[..., Result]


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
