"""Requests the ingress forwards to a shim carry its signature; a shim with a key refuses others.

In a cluster an agent's pod is reachable from more than the clrk ingress (Knative's own ingress
and activator sit in between), so the shim must tell the ingress's requests from anyone else's:
only those carry the invocation id the platform minted and the deadline it computed. The ingress
signs each forwarded request with the agent namespace's ``request`` key
(:func:`clrk_runtime.protocol.keys.namespace_key`); the shim, given that key, verifies it.

``X-Clrk-Signature: t=<unix seconds>,v1=<base64url HMAC-SHA256>`` over, one per line: ``v1``,
the time, the method, the agent (``namespace/name``: a request signed for one agent is refused by
another), the invocation id, the ``X-Clrk-Timeout-Ms`` value (empty when absent), the
Content-Type, and the SHA-256 of the body (the ingress forwards the whole CloudEvent as the body,
so the body is everything the agent will read). The time must be within :data:`TOLERANCE_S` of
the shim's clock: a captured request cannot be replayed later (and the shim refuses an id it
has already served).

Pure functions: no I/O, no clock reads (callers pass ``now``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from clrk_runtime.protocol.headers import decimal

__all__ = ["TOLERANCE_S", "InvalidSignature", "sign_request", "verify_request"]

TOLERANCE_S = 300.0
"""How far a signature's time may be from the verifier's clock, either way."""


class InvalidSignature(ValueError):
    """The signature is missing, malformed, stale, or not made with the expected key. The
    message is safe to show the caller."""


def _mac(
    key: bytes,
    timestamp: int,
    *,
    method: str,
    agent: str,
    invocation_id: str,
    timeout_ms: str,
    content_type: str,
    body: bytes,
) -> str:
    text = "\n".join(
        [
            "v1",
            str(timestamp),
            method.upper(),
            agent,
            invocation_id,
            timeout_ms,
            content_type,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    digest = hmac.new(key, text.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign_request(
    key: bytes,
    *,
    now: float,
    method: str,
    agent: str,
    invocation_id: str,
    timeout_ms: str,
    content_type: str,
    body: bytes,
) -> str:
    """The ``X-Clrk-Signature`` value for one forwarded request."""
    timestamp = int(now)
    mac = _mac(
        key,
        timestamp,
        method=method,
        agent=agent,
        invocation_id=invocation_id,
        timeout_ms=timeout_ms,
        content_type=content_type,
        body=body,
    )
    return f"t={timestamp},v1={mac}"


def verify_request(
    value: str | None,
    key: bytes,
    *,
    now: float,
    method: str,
    agent: str,
    invocation_id: str,
    timeout_ms: str,
    content_type: str,
    body: bytes,
    tolerance: float = TOLERANCE_S,
) -> None:
    """Raise :class:`InvalidSignature` unless ``value`` signs exactly this request, recently."""
    if not value:
        raise InvalidSignature("the request is not signed by the clrk ingress")
    fields: dict[str, str] = {}
    for part in value.split(","):
        name, sep, field = part.strip().partition("=")
        if sep:
            fields[name] = field
    mac = fields.get("v1", "")
    timestamp = decimal(fields.get("t", ""), 12)  # few digits: a huge one overflows the float below
    if timestamp is None or not mac:
        raise InvalidSignature("malformed X-Clrk-Signature")
    if abs(now - timestamp) > tolerance:
        raise InvalidSignature("the request's signature is stale")
    expected = _mac(
        key,
        timestamp,
        method=method,
        agent=agent,
        invocation_id=invocation_id,
        timeout_ms=timeout_ms,
        content_type=content_type,
        body=body,
    )
    if not hmac.compare_digest(mac, expected):
        raise InvalidSignature("the request's signature does not match")
