"""The stdin envelope: CloudEvents 1.0 structured JSON whose ``data`` is the caller's body."""

import base64
import json
from collections.abc import Callable
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


BINARY = {"ce-specversion": "1.0", "ce-id": "e", "ce-source": "/s", "ce-type": "t"}
# Every JSON value, falsy ones first: the SDK alone loses "" and null (from_http reads them as no data).
JSON_BODIES = [b'""', b"0", b"false", b"null", b"[]", b"{}", b'"x"', b"-1.50e3", b'{"a": [null, ""]}', b"1e400"]


def _plain(raw: bytes) -> tuple[dict[str, str], bytes]:
    return {"content-type": "application/json"}, raw


def _binary(raw: bytes) -> tuple[dict[str, str], bytes]:
    return {**BINARY, "content-type": "application/json"}, raw


def _binary_without_content_type(raw: bytes) -> tuple[dict[str, str], bytes]:
    return dict(BINARY), raw


def _structured(raw: bytes) -> tuple[dict[str, str], bytes]:
    return {"content-type": "application/cloudevents+json"}, (
        b'{"specversion": "1.0", "id": "e", "source": "/s", "type": "t", "datacontenttype": "application/json",'
        b' "data": ' + raw + b', "ext": "after"}'
    )


Mode = Callable[[bytes], tuple[dict[str, str], bytes]]
MODES: list[Mode] = [_plain, _binary, _binary_without_content_type, _structured]


@pytest.mark.parametrize("mode", MODES, ids=lambda mode: mode.__name__.strip("_"))
@pytest.mark.parametrize("raw", JSON_BODIES, ids=lambda raw: raw.decode())
def test_json_data_is_exactly_the_callers_value_in_every_mode(mode: Mode, raw: bytes) -> None:
    headers, body = mode(raw)
    envelope = encode_envelope(headers, body, new_id=lambda: "new-id", now=NOW)
    event = json.loads(envelope.body)
    value = json.loads(raw)
    assert "data" in event and "data_base64" not in event
    assert event["data"] == value and type(event["data"]) is type(value)  # false is not 0
    assert envelope.body.endswith(b'"data": ' + raw + b"}")  # byte for byte, not re-serialised
    if mode is not _plain:
        assert envelope.invocation_id == event["id"] == "e"


@pytest.mark.parametrize("raw", [b'""', b"0", b"true", b"null", b"[]", b"a,b\n1,2\n", b"\xff\x00"])
def test_binary_non_json_content_type_travels_as_base64_even_when_it_parses_as_json(raw: bytes) -> None:
    _, event = _encode({**BINARY, "content-type": "text/csv"}, raw)
    assert "data" not in event
    assert base64.b64decode(str(event["data_base64"])) == raw
    assert event["datacontenttype"] == "text/csv"


@pytest.mark.parametrize("raw", [b"NaN", b"-Infinity", b'{"a": NaN}', b"\xef\xbb\xbf{}", '{"a": 1}'.encode("utf-16")])
@pytest.mark.parametrize("mode", [_plain, _binary], ids=["plain", "binary"])
def test_what_only_python_reads_as_json_travels_as_base64(mode: Mode, raw: bytes) -> None:
    headers, body = mode(raw)
    _, event = _encode(headers, body)
    assert "data" not in event
    assert base64.b64decode(str(event["data_base64"])) == raw


def test_binary_empty_body_has_no_data() -> None:
    _, event = _encode({**BINARY, "content-type": "application/json"}, b"")
    assert "data" not in event and "data_base64" not in event


def test_structured_event_without_data_stays_without_data() -> None:
    body = b'{"specversion": "1.0", "id": "e", "source": "/s", "type": "t", "ext": "v"}'
    _, event = _encode({"content-type": "application/cloudevents+json"}, body)
    assert "data" not in event and "data_base64" not in event
    assert event["ext"] == "v"


def test_structured_data_base64_is_kept() -> None:
    body = b'{"specversion": "1.0", "id": "e", "source": "/s", "type": "t", "data_base64": "aGk="}'
    _, event = _encode({"content-type": "application/cloudevents+json"}, body)
    assert "data" not in event
    assert base64.b64decode(str(event["data_base64"])) == b"hi"


def test_structured_data_is_found_among_nested_and_repeated_members() -> None:
    body = (
        b' { "data" : 1 , "specversion":"1.0","id":"e","source":"/s","type":"t",'
        b'"ext":{"data": "nested"},"other":["data"],\n"data"\t:\t{"k" : "v,}"}\n}\n'
    )
    _, event = _encode({"content-type": "application/cloudevents+json"}, body)
    assert event["data"] == {"k": "v,}"}  # the last top-level member, as json.loads reads it
    assert event["ext"] == {"data": "nested"}


def test_structured_content_type_is_case_insensitive() -> None:
    body = b'{"specversion": "1.0", "id": "e", "source": "/s", "type": "t", "data": ""}'
    invocation_id, event = _encode({"content-type": "Application/CloudEvents+JSON; charset=UTF-8"}, body)
    assert invocation_id == "e"
    assert event["data"] == ""


def test_ce_headers_with_a_structured_content_type_read_the_body_as_the_event() -> None:
    body = b'{"specversion": "1.0", "id": "from-body", "source": "/s", "type": "t", "data": false}'
    invocation_id, event = _encode({**BINARY, "content-type": "application/cloudevents+json"}, body)
    assert invocation_id == event["id"] == "from-body"
    assert event["data"] is False
