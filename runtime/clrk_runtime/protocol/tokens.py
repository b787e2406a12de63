"""Per-invocation proxy credentials for the egress gateway.

Every invocation reaches the network only through the egress gateway, with its own credentials in
the proxy URL (``http://<invocation-id>:<token>@proxy``). The token is signed with a key that the
shim and the gateway share (in a cluster: a Secret mounted where the agent's uid cannot read it),
so gateway replicas need no shared session state. The key is the agent's namespace's
(:func:`clrk_runtime.protocol.keys.namespace_key` with purpose ``proxy-token``): the gateway, which
holds the platform key, reads the agent a token names with :func:`claimed_agent` (untrusted),
derives that namespace's key and only then verifies, so a key read in one namespace cannot mint
tokens for an agent of another. The token carries the agent, the invocation,
the caller's trace context and an expiry (the invocation's deadline plus a small grace), and so it
dies with the invocation. The gateway may also keep a revocation set for tokens ended early.

Pure functions over bytes: no I/O, no clock reads (callers pass ``now``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass

__all__ = ["InvalidToken", "ProxyClaims", "claimed_agent", "sign", "verify"]

_SEPARATOR = "."


class InvalidToken(ValueError):
    """The token is malformed, not signed by the shared key, or expired."""


@dataclass(frozen=True, slots=True)
class ProxyClaims:
    """What a proxy token says about the invocation that holds it."""

    invocation_id: str
    agent: str
    """``namespace/name`` of the TaskAgent."""
    expires_at: float
    """Unix time (seconds) after which the gateway refuses the token."""
    traceparent: str = ""
    """W3C trace context of the invocation's span, so model-call spans become its children."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest())


def sign(claims: ProxyClaims, key: bytes) -> str:
    """Return the token for ``claims``: URL-safe, so it can stand in a proxy URL's password."""
    body = {
        "i": claims.invocation_id,
        "a": claims.agent,
        "e": round(claims.expires_at, 3),
        "t": claims.traceparent,
    }
    payload = _b64(json.dumps(body, separators=(",", ":")).encode("utf-8"))
    return payload + _SEPARATOR + _mac(key, payload)


def claimed_agent(token: str) -> str:
    """The agent (``namespace/name``) a token *claims*, read without checking its signature.

    Untrusted until :func:`verify` accepts the token: it only tells the verifier which namespace's
    key to check the signature with. Raises :class:`InvalidToken` when the payload is unreadable.
    """
    payload, sep, _ = token.partition(_SEPARATOR)
    if not sep or not payload:
        raise InvalidToken("malformed token")
    try:
        agent = json.loads(_unb64(payload))["a"]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise InvalidToken("malformed claims") from exc
    if not isinstance(agent, str):
        raise InvalidToken("malformed claims")
    return agent


def verify(token: str, key: bytes, *, now: float, invocation_id: str | None = None) -> ProxyClaims:
    """Check ``token``'s signature and expiry and return its claims.

    ``invocation_id``, when given, must match the token's (it is the proxy URL's user name).
    Raises :class:`InvalidToken` with a reason that is safe to log (never the token itself).
    """
    payload, sep, mac = token.partition(_SEPARATOR)
    if not sep or not payload or not mac:
        raise InvalidToken("malformed token")
    if not hmac.compare_digest(mac, _mac(key, payload)):
        raise InvalidToken("bad signature")
    try:
        body = json.loads(_unb64(payload))
        claims = ProxyClaims(
            invocation_id=str(body["i"]),
            agent=str(body["a"]),
            expires_at=float(body["e"]),
            traceparent=str(body.get("t", "")),
        )
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise InvalidToken("malformed claims") from exc
    if now >= claims.expires_at:
        raise InvalidToken("expired")
    if invocation_id is not None and not hmac.compare_digest(invocation_id, claims.invocation_id):
        raise InvalidToken("user name does not match the token")
    return claims
