from __future__ import annotations

import json

import pytest

from clrk.egress.messages import (
    SseUsageParser,
    is_messages_call,
    parse_request,
    usage_from_json,
)


def sse(event: str, data: dict[str, object], crlf: bool = False) -> bytes:
    text = f"event: {event}\ndata: {json.dumps(data)}\n\n"
    return (text.replace("\n", "\r\n") if crlf else text).encode()


STREAM = b"".join(
    [
        sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "model": "claude-x",
                    "usage": {
                        "input_tokens": 10,
                        "cache_read_input_tokens": 200,
                        "cache_creation_input_tokens": 30,
                        "output_tokens": 1,
                    },
                },
            },
        ),
        sse("ping", {"type": "ping"}),
        sse("content_block_delta", {"type": "content_block_delta", "delta": {"text": "hé"}}),
        sse("message_delta", {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 5}}),
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 9},
            },
        ),
        sse("message_stop", {"type": "message_stop"}),
    ]
)


@pytest.mark.parametrize("size", [1, 2, 7, 64, len(STREAM)])
def test_sse_any_slicing_keeps_the_last_cumulative_usage(size: int) -> None:
    parser = SseUsageParser()
    for i in range(0, len(STREAM), size):
        parser.feed(STREAM[i : i + size])
    u = parser.close()
    assert (u.input_tokens, u.output_tokens) == (10, 9)
    assert (u.cache_read_input_tokens, u.cache_creation_input_tokens) == (200, 30)
    assert u.total_tokens == 249
    assert (u.model, u.response_id, u.stop_reason, u.complete) == (
        "claude-x",
        "msg_1",
        "end_turn",
        True,
    )


def test_sse_crlf_and_error_event() -> None:
    parser = SseUsageParser()
    parser.feed(
        sse(
            "message_start",
            {"type": "message_start", "message": {"usage": {"input_tokens": 3}}},
            crlf=True,
        )
    )
    parser.feed(sse("error", {"type": "error", "error": {"type": "overloaded_error"}}, crlf=True))
    u = parser.close()
    assert u.input_tokens == 3
    assert u.error_type == "overloaded_error"
    assert not u.complete


def test_sse_garbage_is_ignored_and_last_event_without_blank_line_counts() -> None:
    parser = SseUsageParser()
    parser.feed(b'data: {not json\n\n: comment\n\ndata: {"type": "message_stop"}')
    assert parser.close().complete


def test_json_message_and_error() -> None:
    u = usage_from_json(
        json.dumps(
            {
                "type": "message",
                "id": "m",
                "model": "x",
                "stop_reason": "tool_use",
                "usage": {"input_tokens": 1, "output_tokens": 2},
            }
        ).encode()
    )
    assert (u.input_tokens, u.output_tokens, u.stop_reason, u.complete) == (1, 2, "tool_use", True)
    e = usage_from_json(b'{"type":"error","error":{"type":"rate_limit_error","message":"x"}}')
    assert e.error_type == "rate_limit_error"
    assert usage_from_json(b"<html>").total_tokens == 0


def test_request_parsing() -> None:
    r = parse_request(b'{"model": "m", "max_tokens": 32000, "stream": true}')
    assert (r.model, r.max_tokens, r.stream) == ("m", 32000, True)
    assert parse_request(b"nope").max_tokens == 0
    assert parse_request(b'{"max_tokens": "5"}').max_tokens == 0


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/v1/messages?beta=true", True),
        ("POST", "/v1/messages", True),
        ("POST", "/v1/messages/count_tokens", False),
        ("GET", "/v1/messages", False),
        ("POST", "/v1/complete", False),
    ],
)
def test_is_messages_call(method: str, path: str, expected: bool) -> None:
    assert is_messages_call(method, path) is expected
