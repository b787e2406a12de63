"""The stdin envelope: CloudEvents 1.0 structured JSON whose ``data`` is the caller's body."""

import base64
import json
from datetime import UTC, datetime

import pytest

from clrk_runtime.envelope import EVENT_TYPE, EnvelopeError, encode_envelope

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _encode(headers: dict[str, str], body: bytes) -> tuple[str, dict[str, object]]:
    envelope = encode_envelope(headers, body, new_id=lambda: "new-id", now=NOW)
    return envelope.invocation_id, json.loads(envelope.body)


def test_json_body_becomes_data_exactly() -> None:
    body = b'{"b": 1.50, "a": [1, 2], "s": "\\u00e9"}'
    invocation_id, event = _encode({"content-type": "application/json"}, body)
    assert invocation_id == "new-id"
    assert event["specversion"] == "1.0"
    assert event["id"] == "new-id"
    assert event["type"] == EVENT_TYPE
    assert event["time"] == "2026-01-02T03:04:05Z"
    assert event["data"] == json.loads(body)
    raw = encode_envelope({}, body, new_id=lambda: "x", now=NOW).body
    assert body in raw  # byte for byte, not re-serialised


def test_invocation_id_header_is_used_when_not_a_cloudevent() -> None:
    invocation_id, event = _encode({"x-clrk-invocation-id": "from-ingress"}, b"{}")
    assert invocation_id == event["id"] == "from-ingress"


def test_non_json_body_travels_as_base64() -> None:
    _, event = _encode({"content-type": "text/csv"}, b"a,b\n1,2\n")
    assert "data" not in event
    assert base64.b64decode(str(event["data_base64"])) == b"a,b\n1,2\n"
    assert event["datacontenttype"] == "text/csv"


def test_json_content_type_with_invalid_json_is_base64() -> None:
    _, event = _encode({"content-type": "application/json"}, b"{not json")
    assert base64.b64decode(str(event["data_base64"])) == b"{not json"


def test_binary_cloudevent_keeps_its_id_and_attributes() -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "evt-1",
        "ce-source": "/orders",
        "ce-type": "order.created",
        "content-type": "application/json",
    }
    invocation_id, event = _encode(headers, b'{"order": 7}')
    assert invocation_id == "evt-1"
    assert (event["source"], event["type"], event["data"]) == ("/orders", "order.created", {"order": 7})


def test_structured_cloudevent_passes_through() -> None:
    body = {"specversion": "1.0", "id": "evt-2", "source": "s", "type": "t", "data": {"k": "v"}}
    invocation_id, event = _encode({"content-type": "application/cloudevents+json"}, json.dumps(body).encode())
    assert invocation_id == "evt-2"
    assert event["data"] == {"k": "v"}


def test_malformed_cloudevent_is_an_error() -> None:
    with pytest.raises(EnvelopeError):
        _encode({"content-type": "application/cloudevents+json"}, b"{oops")


def test_binary_json_data_is_kept_exactly_even_when_falsy() -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "e",
        "ce-source": "/s",
        "ce-type": "t",
        "content-type": "application/json",
    }
    for raw, value in ((b'""', ""), (b"0", 0), (b"false", False), (b"[]", [])):
        envelope = encode_envelope(headers, raw, new_id=lambda: "unused")
        assert json.loads(envelope.body)["data"] == value
