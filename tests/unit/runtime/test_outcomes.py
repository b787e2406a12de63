"""Outcome mapping: exit codes, deadlines and caps become HTTP answers."""

import json

import pytest

from clrk_runtime.invocation.outcomes import (
    RunResult,
    map_outcome,
    no_capacity,
    parse_response_headers,
    sniff_content_type,
)


def _error(body: bytes) -> dict[str, object]:
    error = json.loads(body)["error"]
    assert isinstance(error, dict)
    return error


def test_exit_zero_answers_stdout_with_sniffed_json() -> None:
    response = map_outcome(RunResult(0, b'{"ok": true}\n'), "id-1", 10)
    assert response.status == 200
    assert response.body == b'{"ok": true}\n'
    assert response.header("content-type") == "application/json"
    assert response.header("x-clrk-invocation-id") == "id-1"


def test_non_json_stdout_is_text() -> None:
    response = map_outcome(RunResult(0, b"hello"), "id", 10)
    assert response.header("Content-Type") == "text/plain; charset=utf-8"


def test_declared_type_and_status_win() -> None:
    result = RunResult(0, b"a,b", response_headers="Content-Type: text/csv\nStatus: 201 Created\n")
    response = map_outcome(result, "id", 10)
    assert (response.status, response.header("content-type")) == (201, "text/csv")


def test_non_zero_exit_is_502_with_the_code() -> None:
    response = map_outcome(RunResult(3, b"secret partial output"), "id-2", 10)
    assert response.status == 502
    error = _error(response.body)
    assert error["type"] == "agent_failed"
    assert error["exitCode"] == 3
    assert error["invocationId"] == "id-2"
    assert b"secret" not in response.body


def test_deadline_is_504() -> None:
    response = map_outcome(RunResult(-9, timed_out=True), "id", 2.5)
    assert response.status == 504
    assert _error(response.body)["type"] == "deadline_exceeded"


def test_stdout_over_cap_is_502() -> None:
    response = map_outcome(RunResult(0, b"x", stdout_overflow=True), "id", 1)
    assert response.status == 502
    assert _error(response.body)["type"] == "response_too_large"


def test_no_capacity_is_503_with_retry_after() -> None:
    response = no_capacity("id")
    assert response.status == 503
    assert response.header("retry-after") == "1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", (None, None)),
        ("Status: 999\nContent-Type:\n", (None, None)),
        ("garbage\nstatus: 404\n", (404, None)),
    ],
)
def test_response_header_lines_are_forgiving(text: str, expected: tuple[object, object]) -> None:
    assert parse_response_headers(text) == expected


@pytest.mark.parametrize(
    ("body", "kind"),
    [(b"[1]", "application/json"), (b"42", "application/json"), (b"nope", "text/plain")],
)
def test_sniffing(body: bytes, kind: str) -> None:
    assert sniff_content_type(body).startswith(kind)
