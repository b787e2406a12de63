"""``clrk invoke --follow/--async`` and ``clrk invocations``: their pure parts (the headers asked
for, an outcome read as the buffered answer it stands for, the async answer's id, the documents)."""

from __future__ import annotations

import json

import pytest

from clrk.authoring import InvocationRequest, InvocationResult, InvokeUsageError, error_line
from clrk.authoring.following import outcome_result
from clrk.authoring.invoking import mode_headers, post_headers
from clrk.authoring.tracking import (
    accepted_id,
    check_invocation_id,
    document_text,
    invocations_url,
    status_line,
)
from clrk_runtime.protocol.ids import new_invocation_id
from clrk_runtime.protocol.streams import Outcome

ID = new_invocation_id()


def test_follow_asks_for_events_and_async_for_a_later_answer() -> None:
    assert mode_headers() == {}
    assert mode_headers(follow=True) == {"Accept": "text/event-stream"}
    assert mode_headers(respond_async=True) == {"Prefer": "respond-async"}
    assert mode_headers(follow=True, respond_async=True) == {"Prefer": "respond-async"}, (
        "the async answer is a 202 at once; its events are followed on their own route"
    )
    with_callback = mode_headers(respond_async=True, callback_url="https://hooks.example.com/done")
    assert with_callback["X-Clrk-Callback-Url"] == "https://hooks.example.com/done"


@pytest.mark.parametrize(
    ("url", "async_", "problem"),
    [
        ("https://hooks.example.com/x", False, "only an async invocation calls back: add --async"),
        ("ftp://hooks.example.com/x", True, "expected an http:// or https:// URL, found 'ftp://hooks.example.com/x'"),
        ("hooks.example.com", True, "expected an http:// or https:// URL"),
        ("https://a b", True, "expected an http:// or https:// URL"),
    ],
)
def test_a_bad_callback_is_a_usage_error_naming_the_option(url: str, async_: bool, problem: str) -> None:
    with pytest.raises(InvokeUsageError) as caught:
        mode_headers(respond_async=async_, callback_url=url)
    assert caught.value.option == "--callback-url"
    assert problem in caught.value.message


def test_the_mode_headers_win_over_the_defaults_and_the_agent_over_all() -> None:
    extra = {"Accept": "application/json", "X-Clrk-TaskAgent": "other/agent"} | mode_headers(follow=True)
    headers = post_headers(InvocationRequest("http://x", "default/bot", b"{}", extra))
    assert headers["Accept"] == "text/event-stream"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Clrk-TaskAgent"] == "default/bot"


def test_a_failed_outcome_reads_as_the_buffered_error() -> None:
    error: dict[str, object] = {"type": "agent_failed", "message": "the agent exited with code 3", "invocationId": ID}
    outcome = Outcome.parse(json.dumps(Outcome(ID, 502, 3, "text/plain", error).document()))
    result = outcome_result(outcome, 1.5)
    assert (result.status, result.reason, result.ok) == (502, "Bad Gateway", False)
    assert result.invocation_id == ID
    assert error_line(result) == f"agent_failed: the agent exited with code 3 (invocation {ID})"


def test_an_agents_own_status_without_an_error_object_names_the_status() -> None:
    result = outcome_result(Outcome(ID, 422, 0, "application/json"), 0.1)
    assert result.body == b""
    assert error_line(result) == f"HTTP 422 Unprocessable Entity (invocation {ID})"
    assert outcome_result(Outcome(ID, 200, 0), 0.1).ok


def test_an_outcome_with_the_exact_body_keeps_it() -> None:
    result = outcome_result(Outcome(ID, 200, 0, "application/json", body=b'{"a": 1}\n'), 0.1)
    assert result.body == b'{"a": 1}\n'
    assert result.headers["content-type"] == "application/json"


def test_an_unknown_status_has_no_reason() -> None:
    assert outcome_result(Outcome(ID, 599), 0.1).reason == ""


def _answer(status: int, body: object, header: str | None = None) -> InvocationResult:
    headers = {"x-clrk-invocation-id": header} if header else {}
    return InvocationResult(status, "", json.dumps(body).encode(), headers, 0.1)


def test_the_async_answers_id_comes_from_its_header_or_its_document() -> None:
    assert accepted_id(_answer(202, {"invocationId": "from-body"}, header=ID)) == ID
    assert accepted_id(_answer(202, {"invocationId": ID, "status": "queued"})) == ID
    assert accepted_id(_answer(202, ["no", "document"])) is None
    assert accepted_id(_answer(200, {"invocationId": ID}, header=ID)) is None, "run synchronously: no async id"
    assert accepted_id(_answer(401, {"error": {"type": "unauthorized", "message": "…"}}, header=ID)) is None


def test_an_invocation_id_is_checked_before_it_goes_in_a_path() -> None:
    assert check_invocation_id(ID) == ID
    for bad in ("../../healthz", "0193a4c2", ID.upper(), f"{ID}/result"):
        with pytest.raises(InvokeUsageError) as caught:
            check_invocation_id(bad)
        assert caught.value.option == "ID"
        assert repr(bad) in caught.value.message


def test_the_invocations_routes() -> None:
    assert invocations_url("http://127.0.0.1:18080/", ID) == f"http://127.0.0.1:18080/invocations/{ID}"
    assert invocations_url("http://h", ID, "events") == f"http://h/invocations/{ID}/events"


def test_documents_are_indented_and_other_bodies_shown_as_text() -> None:
    assert document_text(b'{"status":"running","attempts":1}') == '{\n  "status": "running",\n  "attempts": 1\n}'
    assert document_text(b"plain \xff") == "plain \ufffd"


def test_a_status_event_is_one_line() -> None:
    assert status_line({"status": "queued"}) == "status: queued"
    assert status_line({"status": "running", "attempts": 2}) == "status: running (attempt 2)"
    assert status_line({"status": "failed", "attempts": 1, "httpStatus": 502}) == "status: failed (attempt 1, HTTP 502)"
