"""The envelope an agent reads on stdin: one CloudEvents 1.0 event in structured JSON mode.

Pure functions: the request's headers and body in, the invocation id and the envelope's bytes out.
A CloudEvent (binary ``ce-*`` headers, or ``application/cloudevents+json``) passes through with
its own id and attributes; any other body is wrapped. Either way a JSON body (or a structured
event's ``data`` member) becomes ``data`` byte for byte, so ``jq '.data'`` yields the caller's
value, ``""``, ``0``, ``false`` and ``null`` included; anything else travels as ``data_base64``.

The format is documented for agent authors in ``docs/envelope.md``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cloudevents.conversion import to_structured
from cloudevents.http import from_http
from cloudevents.sdk.converters import is_structured

__all__ = [
    "EVENT_SOURCE",
    "EVENT_TYPE",
    "Envelope",
    "EnvelopeError",
    "encode_envelope",
    "is_cloudevent",
]

EVENT_TYPE = "dev.clrk.invocation"
"""``type`` of a wrapped (non-CloudEvent) request."""
EVENT_SOURCE = "/clrk/shim"
"""``source`` of a wrapped request."""
_STRUCTURED = "application/cloudevents"


class EnvelopeError(ValueError):
    """The request claims to be a CloudEvent but is not a valid one (answered with 400)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    invocation_id: str
    body: bytes
    """CloudEvents structured JSON, written to the agent's stdin."""


def is_cloudevent(headers: Mapping[str, str]) -> bool:
    """Whether the request is a CloudEvent in binary or structured mode (headers lower-cased)."""
    return "ce-specversion" in headers or _media(headers.get("content-type", "")).startswith(_STRUCTURED)


def _media(content_type: str) -> str:
    """The media type, lower-cased (it is case-insensitive), without parameters."""
    return content_type.split(";", 1)[0].strip().lower()


def _is_json_type(content_type: str) -> bool:
    media = _media(content_type)
    return media in ("", "application/json", "text/json") or media.endswith("+json")


def encode_envelope(
    headers: Mapping[str, str],
    body: bytes,
    *,
    new_id: Callable[[], str],
    now: datetime | None = None,
) -> Envelope:
    """The envelope for one request; ``headers`` must have lower-cased names.

    The invocation id is the CloudEvent's id, else the ``x-clrk-invocation-id`` header, else
    ``new_id()``.
    """
    if is_cloudevent(headers):
        return _pass_through(headers, body)
    invocation_id = headers.get("x-clrk-invocation-id") or new_id()
    content_type = headers.get("content-type", "")
    when = (now or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
    attributes = {
        "specversion": "1.0",
        "id": invocation_id,
        "source": EVENT_SOURCE,
        "type": EVENT_TYPE,
        "time": when,
    }
    if _is_json_type(content_type) and _is_json(body):
        attributes["datacontenttype"] = "application/json"
        head = json.dumps(attributes, ensure_ascii=False).encode()
        return Envelope(invocation_id, head[:-1] + b', "data": ' + body.strip() + b"}")
    attributes["datacontenttype"] = content_type or "application/octet-stream"
    attributes["data_base64"] = base64.b64encode(body).decode("ascii")
    return Envelope(invocation_id, json.dumps(attributes, ensure_ascii=False).encode())


def _pass_through(headers: Mapping[str, str], body: bytes) -> Envelope:
    """A caller's CloudEvent, re-encoded in structured mode with its ``data`` exactly as sent.

    The SDK validates the event and writes its attributes. The data member is written here, from
    the caller's bytes, because the SDK does not keep it (measured with cloudevents 1.12):
    ``from_http`` turns data ``""`` into None and drops ``null``, in both modes; a binary body
    ``0``, ``true`` or ``"x"`` sent as ``text/csv`` became JSON data instead of ``data_base64``;
    and ``to_structured`` re-serialises numbers (``1e400`` became ``Infinity``, which is not JSON).
    """
    sdk_headers = dict(headers)
    if _media(headers.get("content-type", "")).startswith(_STRUCTURED):  # the SDK compares case-sensitively
        sdk_headers["content-type"] = _media(headers["content-type"])
    try:
        event = from_http(sdk_headers, body)
    except Exception as exc:  # the SDK raises a zoo of its own types
        raise EnvelopeError(f"not a valid CloudEvent: {exc}") from exc
    invocation_id = str(event["id"])
    if not is_structured(sdk_headers):  # binary mode, as the SDK read it: the body is the data
        if _is_json_type(headers.get("content-type", "")) and _is_json(body):
            data: bytes | None = body.strip()
        else:
            data = None
            if body:  # not JSON: the exact bytes, which the SDK writes as data_base64
                event.data = bytes(body)
    else:  # structured mode: the data member's own text, when the event has one
        data = _data_member(body)
    if data is None:
        _, structured = to_structured(event)
        return Envelope(invocation_id, structured)
    event.data = None
    _, attributes = to_structured(event)  # a JSON object without data: '{"specversion": ..., ...}'
    attributes = attributes.rstrip()
    if not attributes.endswith(b"}"):  # pragma: no cover - the SDK always writes one JSON object
        raise EnvelopeError("the CloudEvents SDK wrote no JSON object")
    return Envelope(invocation_id, attributes[:-1] + b', "data": ' + data + b"}")


def _is_json(body: bytes) -> bool:
    """Whether ``body`` is one JSON value, in UTF-8 (RFC 8259), so it can be copied into the envelope.

    Python's parser also takes ``NaN`` and ``Infinity`` and guesses UTF-16 and BOMs: copied into
    the envelope those would make it invalid JSON, so such bodies travel as ``data_base64``.
    """
    try:
        json.loads(body.decode("utf-8"), parse_constant=_not_json)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError included
        return False
    return True


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


def _skip_space(text: str, at: int) -> int:
    match = _SPACE.match(text, at)
    return match.end() if match else at


def _data_member(document: bytes) -> bytes | None:
    """The exact text of a structured event's top-level ``data`` member; None when it has none.

    None too when the event has ``data_base64`` or the body is not a plain UTF-8 JSON object (the
    SDK's encoding is kept then). The standard library's decoder reads each key and value
    (``raw_decode`` tells where a value ends); this walks only the top-level object. A key given
    twice counts once, the last one, as in ``json.loads``.
    """
    try:
        text = document.decode("utf-8")
    except UnicodeDecodeError:
        return None
    members: dict[str, str] = {}
    at = _skip_space(text, 0)
    if text[at : at + 1] != "{":
        return None
    at = _skip_space(text, at + 1)
    try:
        while text[at : at + 1] != "}":
            key, at = _DECODER.raw_decode(text, at)
            at = _skip_space(text, at)
            if not isinstance(key, str) or text[at : at + 1] != ":":
                return None
            start = _skip_space(text, at + 1)
            _, at = _DECODER.raw_decode(text, start)
            members[key] = text[start:at]
            at = _skip_space(text, at)
            if text[at : at + 1] == ",":
                at = _skip_space(text, at + 1)
            elif text[at : at + 1] != "}":
                return None
    except ValueError:
        return None
    if "data" not in members or "data_base64" in members:
        return None
    return members["data"].encode()
