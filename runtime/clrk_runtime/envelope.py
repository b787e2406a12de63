"""The envelope an agent reads on stdin: one CloudEvents 1.0 event in structured JSON mode.

Pure functions: the request's headers and body in, the invocation id and the envelope's bytes out.
A CloudEvent (binary ``ce-*`` headers, or ``application/cloudevents+json``) passes through with
its own id; any other body is wrapped: a JSON body becomes ``data`` byte for byte (so
``jq '.data'`` yields the caller's body), anything else travels as ``data_base64``.

The format is documented for agent authors in ``docs/envelope.md``.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cloudevents.conversion import to_structured
from cloudevents.http import from_http

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
    return "ce-specversion" in headers or headers.get("content-type", "").startswith(_STRUCTURED)


def _is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
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
        try:
            event = from_http(dict(headers), body)
        except Exception as exc:  # the SDK raises a zoo of its own types
            raise EnvelopeError(f"not a valid CloudEvent: {exc}") from exc
        if "ce-specversion" in headers and body and _is_json_type(headers.get("content-type", "")):
            # The SDK reads a JSON body of "" as no data at all: keep exactly what was sent.
            with contextlib.suppress(ValueError):
                event.data = json.loads(body)
        _, structured = to_structured(event)
        return Envelope(invocation_id=str(event["id"]), body=structured)
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


def _is_json(body: bytes) -> bool:
    if not body.strip():
        return False
    try:
        json.loads(body)
    except ValueError:
        return False
    return True
