"""The stdin envelope: CloudEvents 1.0 structured JSON whose ``data`` is the caller's body.

One builder with one set of rules, for the ingress, the shim and the testing harness alike."""

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from clrk_runtime.protocol.envelope import EVENT_TYPE, Envelope, EnvelopeError, build_envelope

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
BINARY = {"ce-specversion": "1.0", "ce-id": "e", "ce-source": "/s", "ce-type": "t"}
BINARY_ATTRS = {**BINARY, "content-type": "application/json"}


def encode_envelope(headers: dict[str, str], body: bytes, *, invocation_id: str, now: datetime) -> Envelope:
    return build_envelope(headers, body, invocation_id=invocation_id, source="/clrk/test", now=now)


def _encode(headers: dict[str, str], body: bytes) -> tuple[str, dict[str, object]]:
    envelope = encode_envelope(headers, body, invocation_id="new-id", now=NOW)
    assert envelope.invocation_id == "new-id"
    return envelope.event_id, json.loads(envelope.body)


def _refused(headers: dict[str, str], body: bytes) -> EnvelopeError:
    with pytest.raises(EnvelopeError) as caught:
        encode_envelope(headers, body, invocation_id="new-id", now=NOW)
    return caught.value


def test_json_body_becomes_data_exactly() -> None:
    body = b'{"b": 1.50, "a": [1, 2], "s": "\\u00e9"}'
    event_id, event = _encode({"content-type": "application/json"}, body)
    assert event_id == "new-id"
    assert event["clrkinvocationid"] == "new-id"
    assert event["specversion"] == "1.0"
    assert event["id"] == "new-id"
    assert event["type"] == EVENT_TYPE
    assert event["time"] == "2026-01-02T03:04:05Z"
    assert event["source"] == "/clrk/test"
    assert event["datacontenttype"] == "application/json"
    assert event["data"] == json.loads(body)
    raw = encode_envelope({}, body, invocation_id="x", now=NOW).body
    assert body in raw  # byte for byte, not re-serialised


def test_a_wrapped_request_is_named_by_the_invocation_id() -> None:
    envelope = build_envelope({}, b"{}", invocation_id="minted", source="/s")
    event = json.loads(envelope.body)
    assert envelope.wrapped and envelope.event_id == event["id"] == event["clrkinvocationid"] == "minted"


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({**BINARY_ATTRS, "ce-clrkinvocationid": "someone-elses"}, b"{}"),
        (
            {"content-type": "application/cloudevents+json"},
            b'{"specversion": "1.0", "id": "e", "source": "/s", "type": "t", "clrkinvocationid": "someone-elses"}',
        ),
    ],
    ids=["binary", "structured"],
)
def test_a_cloudevent_keeps_its_id_and_is_named_by_the_platforms_invocation_id(
    headers: dict[str, str], body: bytes
) -> None:
    """The caller's id travels; the invocation id is the one given, whatever the event said."""
    envelope = build_envelope(headers, body, invocation_id="minted", source="/s")
    event = json.loads(envelope.body)
    assert (envelope.event_id, event["id"]) == ("e", "e")
    assert envelope.invocation_id == event["clrkinvocationid"] == "minted"
    assert not envelope.wrapped


def test_non_json_body_travels_as_base64() -> None:
    _, event = _encode({"content-type": "text/csv"}, b"a,b\n1,2\n")
    assert "data" not in event
    assert base64.b64decode(str(event["data_base64"])) == b"a,b\n1,2\n"
    assert event["datacontenttype"] == "text/csv"


@pytest.mark.parametrize("content_type", ["application/json", "", "text/json", "application/vnd.x+json"])
def test_a_body_declared_json_that_is_not_is_refused_naming_the_header(content_type: str) -> None:
    error = _refused({"content-type": content_type} if content_type else {}, b"{not json")
    assert error.kind == "invalid_json"
    assert "Content-Type" in error.message


def test_an_empty_body_declared_json_is_refused() -> None:
    assert _refused({}, b"").kind == "invalid_json"


def test_a_json_type_of_its_own_is_kept_as_datacontenttype() -> None:
    _, event = _encode({"content-type": "application/vnd.order+json"}, b'{"n": 1}')
    assert (event["datacontenttype"], event["data"]) == ("application/vnd.order+json", {"n": 1})


def test_binary_cloudevent_keeps_its_id_and_attributes() -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "evt-1",
        "ce-source": "/orders",
        "ce-type": "order.created",
        "content-type": "application/json",
    }
    event_id, event = _encode(headers, b'{"order": 7}')
    assert event_id == "evt-1"
    assert (event["source"], event["type"], event["data"]) == ("/orders", "order.created", {"order": 7})


def test_structured_cloudevent_passes_through() -> None:
    body = {"specversion": "1.0", "id": "evt-2", "source": "s", "type": "t", "data": {"k": "v"}}
    event_id, event = _encode({"content-type": "application/cloudevents+json"}, json.dumps(body).encode())
    assert event_id == "evt-2"
    assert event["data"] == {"k": "v"}


def test_malformed_cloudevent_is_an_error() -> None:
    assert _refused({"content-type": "application/cloudevents+json"}, b"{oops").kind == "invalid_json"


STRUCTURED = {"content-type": "application/cloudevents+json"}


@pytest.mark.parametrize(
    ("headers", "body", "names"),
    [
        ({k: v for k, v in BINARY_ATTRS.items() if k != "ce-id"}, b"{}", "ce-id"),
        ({k: v for k, v in BINARY_ATTRS.items() if k != "ce-type"}, b"{}", "ce-type"),
        ({**BINARY_ATTRS, "ce-specversion": "0.3"}, b"{}", "specversion"),
        ({**BINARY_ATTRS, "ce-id": "a b/../c"}, b"{}", "ce-id"),
        ({**BINARY_ATTRS, "ce-id": "x" * 129}, b"{}", "ce-id"),
        (STRUCTURED, b"[1, 2]", "JSON object"),
        (STRUCTURED, b'{"specversion": "1.0", "id": "e", "source": "/s"}', "type"),
        (STRUCTURED, b'{"specversion": "1.0", "id": 7, "source": "/s", "type": "t"}', "id"),
        (STRUCTURED, b'{"specversion": "1.0", "id": "../e", "source": "/s", "type": "t"}', "attribute id"),
        ({"content-type": "application/cloudevents-batch+json"}, b"[]", "cloudevents+json"),
        ({**BINARY_ATTRS, "content-type": "application/cloudevents+json"}, b"[]", "JSON object"),
    ],
)
def test_invalid_cloudevents_are_refused_naming_what_is_wrong(headers: dict[str, str], body: bytes, names: str) -> None:
    error = _refused(headers, body)
    assert error.kind == "invalid_cloudevent"
    assert names in error.message


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
    envelope = encode_envelope(headers, body, invocation_id="new-id", now=NOW)
    event = json.loads(envelope.body)
    value = json.loads(raw)
    assert "data" in event and "data_base64" not in event
    assert event["data"] == value and type(event["data"]) is type(value)  # false is not 0
    assert envelope.body.endswith(b'"data": ' + raw + b"}")  # byte for byte, not re-serialised
    if mode is not _plain:
        assert envelope.event_id == event["id"] == "e"


@pytest.mark.parametrize("raw", [b'""', b"0", b"true", b"null", b"[]", b"a,b\n1,2\n", b"\xff\x00"])
def test_binary_non_json_content_type_travels_as_base64_even_when_it_parses_as_json(raw: bytes) -> None:
    _, event = _encode({**BINARY, "content-type": "text/csv"}, raw)
    assert "data" not in event
    assert base64.b64decode(str(event["data_base64"])) == raw
    assert event["datacontenttype"] == "text/csv"


@pytest.mark.parametrize("raw", [b"NaN", b"-Infinity", b'{"a": NaN}', b"\xef\xbb\xbf{}", '{"a": 1}'.encode("utf-16")])
@pytest.mark.parametrize("mode", [_plain, _binary, _structured], ids=["plain", "binary", "structured"])
def test_what_only_python_reads_as_json_is_refused(mode: Mode, raw: bytes) -> None:
    """Copied into the envelope, these would make it invalid JSON for the agent's parser."""
    headers, body = mode(raw)
    assert _refused(headers, body).kind in ("invalid_json", "invalid_cloudevent")


def test_the_envelope_is_the_same_whoever_builds_it() -> None:
    """The ingress's envelope, sent on to the shim, passes through it byte for byte."""
    wrapped = {"content-type": "application/json"}
    first = build_envelope(wrapped, b' {"q": [1, ""]} ', invocation_id="i-1", source="/a")
    again = build_envelope(STRUCTURED, first.body, invocation_id="i-1", source="/b")
    assert (again.event_id, again.wrapped) == ("i-1", False)
    assert again.body == first.body
    assert again.body.endswith(b'"data": {"q": [1, ""]}}')


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
    event_id, event = _encode({"content-type": "Application/CloudEvents+JSON; charset=UTF-8"}, body)
    assert event_id == "e"
    assert event["data"] == ""


def test_ce_headers_with_a_structured_content_type_read_the_body_as_the_event() -> None:
    body = b'{"specversion": "1.0", "id": "from-body", "source": "/s", "type": "t", "data": false}'
    event_id, event = _encode({**BINARY, "content-type": "application/cloudevents+json"}, body)
    assert event_id == event["id"] == "from-body"
    assert event["data"] is False
