"""{{name}}'s own tests: the real entrypoint, through the real shim, with a stand-in claude."""

from __future__ import annotations

from collections.abc import Callable

from clrk_runtime.testing import Result

Agent = Callable[..., Result]
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
