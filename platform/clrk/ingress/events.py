"""Turn a caller's request into the CloudEvent the runtime shim receives. Pure functions.

Three shapes come in: a CloudEvent in binary mode (``ce-*`` headers), a CloudEvent in structured
mode (``application/cloudevents+json``), or any other body, which becomes the ``data`` of a new
event. The body's bytes are never re-encoded: a new event travels in binary mode, so
``jq '.data'`` in the agent yields exactly what the caller sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from cloudevents.exceptions import GenericException
from cloudevents.http import from_http
from uuid6 import uuid7

from clrk.ingress.problems import Problem

__all__ = ["EVENT_SOURCE", "EVENT_TYPE", "Envelope", "envelope_for", "is_json"]

EVENT_SOURCE = "/clrk/ingress"
EVENT_TYPE = "dev.clrk.invocation"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


@dataclass(frozen=True, slots=True)
class Envelope:
    invocation_id: str
    headers: dict[str, str]
    """CloudEvent headers (binary mode) or the structured content type, to forward."""
    body: bytes


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _checked_id(value: str, where: str) -> str:
    if not _SAFE_ID.match(value):
        raise Problem(
            400,
            "invalid_cloudevent",
            f"{where}: expected 1-128 characters of letters, digits and '._:-' (it names the "
            "invocation in logs, spans and proxy credentials)",
        )
    return value


def _validate(headers: Mapping[str, str], body: bytes, mode: str) -> str:
    try:
        event = from_http(dict(headers), body)
    except (GenericException, ValueError, AttributeError, TypeError) as exc:
        # The SDK also raises AttributeError/TypeError on odd input (ce-* headers with a
        # structured content type and a JSON array body), which would otherwise end as a 500.
        raise Problem(400, "invalid_cloudevent", f"{mode} CloudEvent: {exc}") from None
    if event["specversion"] != "1.0":
        raise Problem(400, "invalid_cloudevent", f"{mode} CloudEvent: specversion must be 1.0")
    return str(event["id"])


def envelope_for(headers: Mapping[str, str], body: bytes) -> Envelope:
    """The event to forward for a request with these (lower-case) headers and body."""
    content_type = headers.get("content-type", "")
    if "ce-specversion" in headers:
        for name in ("ce-id", "ce-source", "ce-type"):
            if not headers.get(name):
                raise Problem(400, "invalid_cloudevent", f"binary CloudEvent: header {name} is required")
        event_id = _checked_id(_validate(headers, body, "binary"), "ce-id")
        forwarded = {k: v for k, v in headers.items() if k.startswith("ce-")}
        if content_type:
            forwarded["content-type"] = content_type
        return Envelope(event_id, forwarded, body)
    if content_type.split(";", 1)[0].strip().lower() == "application/cloudevents+json":
        try:
            parsed = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise Problem(400, "invalid_json", f"structured CloudEvent: body is not JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise Problem(400, "invalid_cloudevent", "structured CloudEvent: body must be a JSON object")
        for name in ("specversion", "id", "source", "type"):
            if not isinstance(parsed.get(name), str) or not parsed[name]:
                raise Problem(
                    400,
                    "invalid_cloudevent",
                    f"structured CloudEvent: attribute {name} is required",
                )
        event_id = _checked_id(_validate(headers, body, "structured"), "id")
        return Envelope(event_id, {"content-type": content_type}, body)
    if is_json(content_type) or not content_type:
        try:
            json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise Problem(
                400,
                "invalid_json",
                f"body is not valid JSON ({exc}); send JSON or set Content-Type",
            ) from None
        content_type = content_type or "application/json"
    event_id = str(uuid7())
    return Envelope(
        event_id,
        {
            "ce-specversion": "1.0",
            "ce-id": event_id,
            "ce-source": EVENT_SOURCE,
            "ce-type": EVENT_TYPE,
            "content-type": content_type,
        },
        body,
    )
