"""What an agent declares for its answer (``Status:``, ``Content-Type:``), checked against what
HTTP can carry: anything it cannot is left out, never the answer."""

from __future__ import annotations

import pytest

from clrk_runtime.invocation.outcomes import RunResult, declared_headers, map_outcome


@pytest.mark.parametrize(
    "value",
    ["text/plain\x01x", "a\x00b", "text/plain\x7f", "text/pl\u00e9in", "text/\ufffd"],
    ids=["control", "nul", "del", "latin-1", "replacement-character"],
)
def test_a_content_type_that_is_no_header_value_is_sniffed_instead(value: str) -> None:
    declared = declared_headers(f"Content-Type: {value}\n", b'{"a": 1}')
    assert declared.content_type is None
    assert len(declared.ignored) == 1 and "not a valid header value" in declared.ignored[0]
    response = map_outcome(RunResult(0, b'{"a": 1}', response_headers=f"Content-Type: {value}\n"), "id", 1)
    assert response.status == 200 and response.header("content-type") == "application/json"


@pytest.mark.parametrize("status", [204, 304])
def test_a_status_that_forbids_a_body_is_ignored_when_there_is_one(status: int) -> None:
    declared = declared_headers(f"Status: {status}\n", b"body")
    assert declared.status is None and f"Status: {status} ignored" in declared.ignored[0]
    assert map_outcome(RunResult(0, b"body", response_headers=f"Status: {status}\n"), "id", 1).status == 200


@pytest.mark.parametrize("status", [204, 304])
def test_a_status_that_forbids_a_body_is_honoured_without_one(status: int) -> None:
    assert declared_headers(f"Status: {status}\n", b"").status == status
    assert map_outcome(RunResult(0, b"", response_headers=f"Status: {status}\n"), "id", 1).status == status


def test_valid_declarations_pass_untouched() -> None:
    declared = declared_headers("Content-Type: text/csv; charset=utf-8\tx\nStatus: 201 Created\n", b"a,b\n")
    assert (declared.status, declared.content_type, declared.ignored) == (201, "text/csv; charset=utf-8\tx", ())
