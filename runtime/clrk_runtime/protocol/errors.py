"""The platform's one error body. Every refusal, from the ingress, the shim, their HTTP parsers
and the egress gateway, is JSON of this shape::

    {"error": {"type": "no_capacity", "message": "…", "invocationId": "01936f4e-…"}}

``type`` is a stable snake_case word a program can branch on; ``message`` is for people and names
the header, field or limit at fault; ``invocationId`` is there once the request has an id; an
error may add fields of its own (``exitCode``, ``host``, …). The one deliberate exception is the
gateway's budget refusal, shaped like the model provider's own ``rate_limit_error`` so that its
clients back off as usual.
"""

from __future__ import annotations

import json

__all__ = ["error_body", "error_document"]


def error_document(kind: str, message: str, invocation_id: str | None = None, **extra: object) -> dict[str, object]:
    """The error as a JSON-ready dict; ``extra`` adds fields beside ``type`` and ``message``."""
    error: dict[str, object] = {"type": kind, "message": message}
    if invocation_id:
        error["invocationId"] = invocation_id
    error.update(extra)
    return {"error": error}


def error_body(kind: str, message: str, invocation_id: str | None = None, **extra: object) -> bytes:
    """The error as the bytes of a response body (``Content-Type: application/json``)."""
    return json.dumps(error_document(kind, message, invocation_id, **extra)).encode()
