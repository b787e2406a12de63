"""Who may call which agent: bearer keys declared as Caller objects.

Keys are held only as SHA-256 digests; a presented key is hashed and compared to every known
digest in constant time, so neither timing nor early exit tells how close a guess was.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from clrk.api import Caller
from clrk.ingress.problems import Problem

__all__ = ["CallerKey", "CallerKeys", "caller_key", "key_digest"]


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class CallerKey:
    name: str
    """``namespace/name`` of the Caller object (for logs; never the key)."""
    digest: str
    agents: frozenset[str]
    """``namespace/name`` refs, or ``*``."""


def caller_key(caller: Caller, secret: Callable[[str, str], str | None]) -> CallerKey | None:
    """The table entry for a Caller object; ``secret(name, key)`` reads a ``keySecretRef``.
    None when that secret has no value (the caller decides whether that is fatal)."""
    digest = caller.spec.key_sha256
    ref = caller.spec.key_secret_ref
    if digest is None and ref is not None:
        value = secret(ref.name, ref.key)
        if value is None:
            return None
        digest = key_digest(value)
    if digest is None:
        return None
    return CallerKey(caller.ref, digest, frozenset(caller.allowed_refs()))


class CallerKeys:
    """The authentication table. ``open_mode`` lets every request through (loopback default)."""

    def __init__(self, keys: Iterable[CallerKey] = (), *, open_mode: bool = False) -> None:
        self.keys = tuple(keys)
        self.open_mode = open_mode

    def replace(self, keys: Iterable[CallerKey]) -> None:
        """Swap the keys (a cluster's Callers, re-read every few seconds)."""
        self.keys = tuple(keys)

    def authorize(self, authorization: str | None, agent: str) -> str | None:
        """Return the caller's name (``None`` in open mode), or raise a 401/403 Problem."""
        match = self.authenticate(authorization)
        if match is None:
            return None
        if "*" not in match.agents and agent not in match.agents:
            raise Problem(403, "forbidden", f"caller {match.name} may not call agent {agent}")
        return match.name

    def authenticate(self, authorization: str | None) -> CallerKey | None:
        """The caller whose key ``authorization`` carries (``None`` in open mode), or a 401
        Problem: what every route that shows a caller anything asks first."""
        if self.open_mode:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(
                401,
                "unauthenticated",
                "send 'Authorization: Bearer <key>' with a key declared by a Caller",
                {"WWW-Authenticate": 'Bearer realm="clrk"'},
            )
        digest = key_digest(token.strip())
        match: CallerKey | None = None
        for key in self.keys:  # no early exit: every digest is compared
            if hmac.compare_digest(key.digest, digest):
                match = key
        if match is None:
            raise Problem(
                401,
                "unauthenticated",
                "unknown bearer key",
                {"WWW-Authenticate": 'Bearer realm="clrk"'},
            )
        return match
