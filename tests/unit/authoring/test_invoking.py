"""``clrk invoke``'s pure core: the agent reference, the body, headers, errors, token use."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

import clrk.authoring
from clrk.api.common import DNS_LABEL_RULE
from clrk.authoring import (
    InvocationResult,
    InvokeUsageError,
    TokenUsage,
    agent_ref,
    error_line,
    is_error_body,
    load_data,
    parse_data,
    parse_header,
    summary,
    token_usage,
)


def _result(
    status: int, body: bytes, invocation: str | None = "inv-1", reason: str = "Bad Gateway"
) -> InvocationResult:
    headers = {"x-clrk-invocation-id": invocation} if invocation else {}
    return InvocationResult(status, reason, body, headers, 1.2345)


def test_the_agent_defaults_to_the_default_namespace() -> None:
    assert agent_ref("jq-bot") == "default/jq-bot"
    assert agent_ref("jq-bot", "team") == "team/jq-bot"


def test_a_namespace_in_the_name_wins() -> None:
    assert agent_ref("team/jq-bot", "default") == "team/jq-bot"


@pytest.mark.parametrize(("name", "option"), [("Jq_Bot", "NAME"), ("a/b/c", "--namespace"), ("/x", "--namespace")])
def test_bad_names_are_usage_errors_quoting_the_rule(name: str, option: str) -> None:
    with pytest.raises(InvokeUsageError) as caught:
        agent_ref(name)
    assert caught.value.option == option
    assert DNS_LABEL_RULE in caught.value.message


def test_data_must_be_json_and_the_error_says_so() -> None:
    assert parse_data(b' {"a": 1} ', "x") == b' {"a": 1} '
    with pytest.raises(InvokeUsageError) as caught:
        parse_data(b"{a: 1}", "the value given")
    assert caught.value.option == "--data"
    assert caught.value.message.startswith("the value given: not JSON (Expecting property name")
    assert "'{a: 1}'" in caught.value.message
    with pytest.raises(InvokeUsageError, match="not UTF-8"):
        parse_data(b"\xff", "stdin")


def test_data_from_a_file_from_stdin_or_inline(tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_bytes(b'{"from": "file"}')
    assert load_data(f"@{body}", io.BytesIO()) == b'{"from": "file"}'
    assert load_data("-", io.BytesIO(b"[1, 2]")) == b"[1, 2]"
    assert load_data('{"q": "é"}', io.BytesIO()) == '{"q": "é"}'.encode()
    with pytest.raises(InvokeUsageError, match=r"nope.json: cannot read: No such file"):
        load_data(f"@{tmp_path / 'nope.json'}", io.BytesIO())
    with pytest.raises(InvokeUsageError, match=r"^--data: stdin: not JSON"):
        load_data("-", io.BytesIO(b"hello"))
    body.write_bytes(b"oops")
    with pytest.raises(InvokeUsageError, match=rf"{body}: not JSON"):
        load_data(f"@{body}", io.BytesIO())


def test_headers_are_name_colon_value() -> None:
    assert parse_header("X-Trace: abc:def") == ("X-Trace", "abc:def")
    assert parse_header("Accept:text/plain") == ("Accept", "text/plain")
    for bad in ("no-colon", ": v", "Two Words: v"):
        with pytest.raises(InvokeUsageError, match="expected NAME:VALUE"):
            parse_header(bad)
    with pytest.raises(InvokeUsageError, match="comes from NAME"):
        parse_header("x-clrk-taskagent: other/agent")


def test_a_clrk_error_becomes_one_line_with_the_invocation() -> None:
    body = json.dumps({"error": {"type": "agent_failed", "message": "exit 3", "invocationId": "inv-9"}}).encode()
    assert error_line(_result(502, body)) == "agent_failed: exit 3 (invocation inv-9)"
    no_id = json.dumps({"error": {"type": "unknown_agent", "message": "no TaskAgent default/x"}}).encode()
    assert error_line(_result(404, no_id, invocation=None)) == "unknown_agent: no TaskAgent default/x"
    assert error_line(_result(404, no_id)) == "unknown_agent: no TaskAgent default/x (invocation inv-1)"
    assert is_error_body(body)


def test_any_other_failure_names_the_status() -> None:
    assert error_line(_result(422, b'{"why": "no"}', reason="Unprocessable Entity")) == (
        "HTTP 422 Unprocessable Entity (invocation inv-1)"
    )
    assert error_line(_result(500, b"boom", invocation=None, reason="")) == "HTTP 500"
    assert not is_error_body(b'{"why": "no"}')
    assert not is_error_body(b'{"error": "text"}')
    assert not is_error_body(b"boom")


def test_token_use_adds_up_the_model_calls_of_the_trace() -> None:
    spans = [
        {"name": "POST /", "attributes": {"clrk.invocation.id": "inv-1"}},
        {"name": "chat", "attributes": {"gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 20}},
        {"name": "chat", "attributes": {"gen_ai.usage.input_tokens": 50, "gen_ai.usage.output_tokens": 5}},
        "not a span",
        {"name": "odd", "attributes": None},
    ]
    assert token_usage(spans) == TokenUsage(150, 25, 2)  # type: ignore[arg-type]
    assert token_usage([{"attributes": {"clrk.invocation.id": "x"}}]) is None
    assert token_usage([]) is None


def test_the_verbose_summary() -> None:
    result = _result(200, b"{}", reason="OK")
    assert summary(result, TokenUsage(150, 25, 2)) == [
        "invocation: inv-1",
        "status: 200 OK",
        "duration: 1.234s",
        "tokens: 150 in, 25 out (2 model calls)",
    ]
    assert summary(_result(200, b"", invocation=None, reason=""), None)[::3] == [
        "invocation: unknown",
        "tokens: unknown",
    ]
    assert summary(result, TokenUsage(1, 2, 1))[3] == "tokens: 1 in, 2 out (1 model call)"


def test_the_public_names_are_pinned() -> None:
    assert set(clrk.authoring.__all__) == {
        *("DEFAULT_URL", "PLACEHOLDER", "Fork", "InvocationError", "InvocationRequest", "InvocationResult"),
        *("InvokeUsageError", "ScaffoldError", "TemplateFile", "TokenUsage", "agent_ref", "available_templates"),
        *("check_name", "clrk_checkout", "create_fork", "error_line", "fetch_usage", "is_error_body", "load_data"),
        *("next_steps", "parse_data", "parse_header", "read_template", "render_fork", "send", "summary"),
        *("templates_dir", "token_usage"),
    }
