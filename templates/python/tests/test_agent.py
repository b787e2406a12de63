"""{{name}}'s own tests: the real entrypoint, through the real shim, with a stand-in claude."""

from __future__ import annotations

from collections.abc import Callable

from clrk_runtime.testing import Result

Agent = Callable[..., Result]


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
