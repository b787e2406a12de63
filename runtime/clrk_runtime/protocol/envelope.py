"""The envelope an agent reads on stdin: one CloudEvents 1.0 event in structured JSON mode.

One builder, one set of rules, for every producer: the ingress builds it from a caller's request
and forwards it; the shim builds it from whatever reaches it (the ingress's envelope passes
through unchanged, a direct call is wrapped the same way); :mod:`clrk_runtime.testing` goes
through the shim. Pure: headers and body in, an :class:`Envelope` or an :class:`EnvelopeError`
(answered 400) out.

Three shapes come in (header names lower-cased):

* **structured CloudEvent**, ``Content-Type: application/cloudevents+json`` (whatever ``ce-*``
  headers come with it, as the CloudEvents HTTP binding says): the body is the event;
* **binary CloudEvent**, ``ce-specversion`` and the other ``ce-*`` headers: the body is its data;
* **anything else** becomes the ``data`` of a new event (``id`` the invocation id, the
  ``source`` given, type :data:`EVENT_TYPE`).

Every envelope names its invocation in the extension attribute :data:`INVOCATION_ATTRIBUTE`
(``clrkinvocationid``), set by the builder whatever the request said: the invocation id is the
platform's (:mod:`clrk_runtime.protocol.ids`). The shim adds, when the invocation starts
(:func:`stamp`), its deadline (:data:`DEADLINE_ATTRIBUTE`, ``clrkdeadline``) and the invocation
span's ``traceparent`` (the CloudEvents distributed-tracing extension), dropping whatever the
request said of either: an agent started before its request (warm start) learns them only here.
A caller's CloudEvent keeps its own ``id``, which keys nothing. A CloudEvent keeps its
attributes and other extensions; one without ``time`` gets the moment it arrived (the CloudEvents
SDK's rule). Either way a JSON ``data`` is copied byte for
byte, so ``jq '.data'`` yields the caller's value (``""``, ``0``, ``false`` and ``null``
included); any other body travels as ``data_base64`` with its own ``datacontenttype``. The rules
that refuse (each names the header or attribute at fault):

* a body declared JSON (``application/json``, ``text/json``, ``*+json``, or no type at all) must
  be one JSON value in UTF-8 (RFC 8259: not ``NaN``, no BOM): ``invalid_json``;
* a CloudEvent must be valid for the CloudEvents SDK, of ``specversion`` 1.0, with ``id``,
  ``source`` and ``type``, and an ``id`` that follows :data:`~clrk_runtime.protocol.ids.EVENT_ID_RULE`
  (it is written into the ingress's span): ``invalid_cloudevent``;
* batches (``application/cloudevents-batch+json``) are not invocations: ``invalid_cloudevent``.

A header given twice is refused before this builder runs
(:func:`clrk_runtime.protocol.headers.request_headers`). The format is documented for agent
authors in ``docs/envelope.md``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent, from_http

from clrk_runtime.protocol.ids import EVENT_ID_RULE, is_event_id

__all__ = [
    "DEADLINE_ATTRIBUTE",
    "EVENT_TYPE",
    "INVOCATION_ATTRIBUTE",
    "STRUCTURED",
    "TRACE_ATTRIBUTE",
    "Envelope",
    "EnvelopeError",
    "build_envelope",
    "stamp",
]

EVENT_TYPE = "dev.clrk.invocation"
"""``type`` of a wrapped (non-CloudEvent) request."""
STRUCTURED = "application/cloudevents+json"
"""The media type of a structured CloudEvent, and of the envelope itself."""
INVOCATION_ATTRIBUTE = "clrkinvocationid"
"""The extension attribute holding the invocation id, in every envelope."""
DEADLINE_ATTRIBUTE = "clrkdeadline"
"""The extension attribute holding the invocation's deadline, RFC 3339 UTC (see :func:`stamp`)."""
TRACE_ATTRIBUTE = "traceparent"
"""The invocation span's W3C trace context (the CloudEvents distributed-tracing extension)."""
_STAMPED = (DEADLINE_ATTRIBUTE, TRACE_ATTRIBUTE)
_REQUIRED = ("id", "source", "type")


class EnvelopeError(ValueError):
    """The request cannot become an envelope; ``kind`` is the error body's ``type``."""

    def __init__(self, kind: Literal["invalid_json", "invalid_cloudevent"], message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class Envelope:
    event_id: str
    """The CloudEvent's ``id``: the caller's for a CloudEvent, else the invocation id."""
    invocation_id: str
    """The invocation id it was built for (its :data:`INVOCATION_ATTRIBUTE`)."""
    body: bytes
    """CloudEvents structured JSON, written to the agent's stdin."""
    wrapped: bool
    """True when the request was not a CloudEvent and the event was made here."""


def _media(content_type: str) -> str:
    """The media type, lower-cased (it is case-insensitive), without parameters."""
    return content_type.split(";", 1)[0].strip().lower()


def _is_json_type(content_type: str) -> bool:
    media = _media(content_type)
    return media in ("", "application/json", "text/json") or media.endswith("+json")


def build_envelope(
    headers: Mapping[str, str],
    body: bytes,
    *,
    invocation_id: str,
    source: str,
    now: datetime | None = None,
) -> Envelope:
    """The envelope for invocation ``invocation_id`` of one request (``headers`` with lower-cased
    names).

    ``invocation_id`` (the platform's, never the request's) goes into :data:`INVOCATION_ATTRIBUTE`
    and is the ``id`` of a wrapped request; ``source`` is the wrapped event's ``source`` (which
    part of clrk made it). ``now`` is for tests.
    """
    media = _media(headers.get("content-type", ""))
    if media == STRUCTURED:
        return _structured(headers, body, invocation_id)
    if media.startswith("application/cloudevents"):
        raise EnvelopeError(
            "invalid_cloudevent",
            f"header Content-Type: {media} is not an invocation; send one event as {STRUCTURED}",
        )
    if "ce-specversion" in headers:
        return _binary(headers, body, invocation_id)
    return _wrap(headers, body, invocation_id, source, now)


def _wrap(headers: Mapping[str, str], body: bytes, invocation_id: str, source: str, now: datetime | None) -> Envelope:
    """A new event around the request's body, written as a caller's event is (so that passing it
    through again gives the same bytes)."""
    content_type = headers.get("content-type", "")
    when = (now or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
    attributes = {"id": invocation_id, "source": source, "type": EVENT_TYPE, "time": when}
    if _is_json_type(content_type):
        data = _json_value(body, "the body")
        event = CloudEvent({**attributes, "datacontenttype": content_type or "application/json"})
        return _encode(event, data, invocation_id, wrapped=True)
    event = CloudEvent({**attributes, "datacontenttype": content_type}, bytes(body))
    return _encode(event, None, invocation_id, wrapped=True)


def _binary(headers: Mapping[str, str], body: bytes, invocation_id: str) -> Envelope:
    """A binary-mode CloudEvent: attributes in ``ce-*`` headers, the body is its data."""
    for name in _REQUIRED:
        if not headers.get(f"ce-{name}"):
            raise EnvelopeError("invalid_cloudevent", f"binary CloudEvent: header ce-{name} is required")
    event = _validated(headers, body, "binary CloudEvent", "header ce-id")
    content_type = headers.get("content-type", "")
    data: bytes | None = None
    if body and _is_json_type(content_type):
        data = _json_value(body, "the binary CloudEvent's body")
    elif body:  # not JSON: the exact bytes, which the SDK writes as data_base64
        event.data = bytes(body)
    else:
        event.data = None
    return _encode(event, data, invocation_id)


def _structured(headers: Mapping[str, str], body: bytes, invocation_id: str) -> Envelope:
    """A structured-mode CloudEvent: the body is the event, its ``data`` member kept as written."""
    try:
        document = json.loads(body.decode("utf-8"), parse_constant=_not_json)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise EnvelopeError("invalid_json", f"structured CloudEvent: the body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise EnvelopeError("invalid_cloudevent", "structured CloudEvent: the body must be a JSON object")
    for name in ("specversion", *_REQUIRED):
        if not isinstance(document.get(name), str) or not document[name]:
            raise EnvelopeError("invalid_cloudevent", f"structured CloudEvent: attribute {name} is required")
    # The SDK compares the content type case-sensitively and takes ce-* headers over the body.
    sdk_headers = {"content-type": STRUCTURED}
    event = _validated(sdk_headers, body, "structured CloudEvent", "attribute id")
    return _encode(event, _data_member(body), invocation_id)


def _validated(headers: Mapping[str, str], body: bytes, mode: str, id_field: str) -> CloudEvent:
    try:
        event = from_http(dict(headers), body)
    except Exception as exc:  # the SDK raises a zoo of types, AttributeError and TypeError included
        raise EnvelopeError("invalid_cloudevent", f"{mode}: {exc}") from None
    if event["specversion"] != "1.0":
        raise EnvelopeError("invalid_cloudevent", f"{mode}: specversion must be 1.0")
    if not is_event_id(str(event["id"])):
        raise EnvelopeError("invalid_cloudevent", f"{mode}: {id_field}: expected {EVENT_ID_RULE}")
    return event


def _encode(event: CloudEvent, data: bytes | None, invocation_id: str, *, wrapped: bool = False) -> Envelope:
    """``event`` in structured mode, named ``invocation_id`` by its :data:`INVOCATION_ATTRIBUTE`,
    with ``data`` (its exact JSON text) when given.

    The SDK validates the event and writes its attributes; the data member is written here, from
    the caller's bytes, because the SDK does not keep it (measured with cloudevents 1.12):
    ``from_http`` turns data ``""`` into None and drops ``null``, in both modes; a binary body
    ``0``, ``true`` or ``"x"`` sent as ``text/csv`` became JSON data instead of ``data_base64``;
    and ``to_structured`` re-serialises numbers (``1e400`` became ``Infinity``, which is not JSON).
    """
    event_id = str(event["id"])
    event[INVOCATION_ATTRIBUTE] = invocation_id  # whatever the request said
    for name in _STAMPED:  # the shim's to say (see stamp)
        if name in event:
            del event[name]
    if data is None:
        _, structured = to_structured(event)
        return Envelope(event_id, invocation_id, structured, wrapped)
    event.data = None
    _, attributes = to_structured(event)  # a JSON object without data: '{"specversion": ..., ...}'
    attributes = attributes.rstrip()
    return Envelope(event_id, invocation_id, attributes[:-1] + b', "data": ' + data + b"}", wrapped)


def stamp(envelope: bytes, *, deadline: str, traceparent: str) -> bytes:
    """``envelope`` (what :func:`build_envelope` made) with :data:`DEADLINE_ATTRIBUTE` set to
    ``deadline`` (RFC 3339) and :data:`TRACE_ATTRIBUTE` to ``traceparent`` (left out when empty).

    Written in front of the other members, the rest kept byte for byte (the builder dropped any
    attribute of these names, so none is given twice)."""
    members = [f'"{DEADLINE_ATTRIBUTE}": {json.dumps(deadline)}']
    if traceparent:
        members.append(f'"{TRACE_ATTRIBUTE}": {json.dumps(traceparent)}')
    start = envelope.index(b"{") + 1
    return b"{" + ", ".join(members).encode() + b", " + envelope[start:].lstrip()


def _json_value(body: bytes, what: str) -> bytes:
    """``body`` stripped, when it is one JSON value in UTF-8 (RFC 8259); else ``invalid_json``.

    Python's parser also takes ``NaN`` and ``Infinity`` and guesses UTF-16 and BOMs: copied into
    the envelope those would make it invalid JSON, so they are refused here.
    """
    try:
        json.loads(body.decode("utf-8"), parse_constant=_not_json)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise EnvelopeError(
            "invalid_json",
            f"{what} is not JSON ({exc}), as header Content-Type says it is; send JSON or set Content-Type",
        ) from None
    return body.strip()


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


def _skip_space(text: str, at: int) -> int:
    match = _SPACE.match(text, at)
    return match.end() if match else at


def _data_member(document: bytes) -> bytes | None:
    """The exact text of a structured event's top-level ``data`` member; None when it has none.

    None too when the event has ``data_base64`` (the SDK's encoding is kept then). The standard
    library's decoder reads each key and value (``raw_decode`` tells where a value ends); this
    walks only the top-level object of a document already known to be one. A key given twice
    counts once, the last one, as in ``json.loads``.
    """
    text = document.decode("utf-8")
    members: dict[str, str] = {}
    at = _skip_space(text, _skip_space(text, 0) + 1)  # past the opening brace
    while text[at : at + 1] != "}":
        key, at = _DECODER.raw_decode(text, at)
        at = _skip_space(text, at)
        start = _skip_space(text, at + 1)  # past the colon
        _, at = _DECODER.raw_decode(text, start)
        members[key] = text[start:at]
        at = _skip_space(text, at)
        if text[at : at + 1] == ",":
            at = _skip_space(text, at + 1)
    if "data" not in members or "data_base64" in members:
        return None
    return members["data"].encode()
