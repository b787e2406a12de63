"""Identity: who is calling, from the per-invocation proxy credentials (``id:token@proxy``).

An addon in the shape of mitmproxy's ``proxyauth``: a CONNECT is authenticated once and the
tunnel remembers its :class:`~clrk_runtime.protocol.tokens.ProxyClaims`; a plain HTTP proxy request
is authenticated on its own. Missing, unknown, badly signed or expired credentials get a 407 with
``Proxy-Authenticate``. The gateway holds the platform key; a token is checked with the key of the
namespace of the agent it names (:func:`~clrk_runtime.protocol.keys.namespace_key`, purpose
``proxy-token``), the key that namespace's shims sign with, so a token signed with one namespace's
key is refused for an agent of another. A token dies with its invocation: its expiry, plus :meth:`revoke` for
invocations that end early (checked on every request, tunnels included). A revoked id is kept
only until the token it revokes would have expired anyway (:mod:`clrk.egress.revocations`), so
the set stays as small as the invocations of the last ~11 minutes, whatever the uptime.

Other addons read the caller from ``flow.metadata[CLAIMS]``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
import weakref
from collections.abc import Callable

from mitmproxy import connection, http

from clrk.egress.denials import forbidden, proxy_auth_required
from clrk.egress.revocations import Revocations
from clrk_runtime.protocol.durations import MAX_TIMEOUT_S
from clrk_runtime.protocol.keys import namespace_key, namespace_of
from clrk_runtime.protocol.tokens import InvalidToken, ProxyClaims, claimed_agent, verify

__all__ = ["CLAIMS", "CLOCK_SLACK_S", "MAX_TOKEN_LIFETIME_S", "ProxyIdentity", "parse_proxy_authorization"]

log = logging.getLogger(__name__)

CLAIMS = "clrk.claims"
"""``flow.metadata`` key holding the caller's :class:`ProxyClaims`."""

MAX_TOKEN_LIFETIME_S = MAX_TIMEOUT_S + 5.0
"""Longest a proxy token lives from its invocation's start: the longest TaskAgent timeout
(``MAX_TIMEOUT_S``, 3600 s: an async invocation's) plus the shim's ``TOKEN_GRACE`` (5 s). An
invocation is revoked after it started, so ``now + MAX_TOKEN_LIFETIME_S`` is never before its token's expiry."""

CLOCK_SLACK_S = 60.0
"""Revoked ids are kept this long past their token's expiry, against a wall clock stepping back."""


def parse_proxy_authorization(value: str) -> tuple[str, str] | None:
    """``Basic base64(user:password)`` → ``(user, password)``; None when malformed."""
    scheme, _, encoded = value.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class ProxyIdentity:
    """Authenticates every flow; the first addon of the chain."""

    def __init__(
        self,
        key: bytes,
        *,
        clock: Callable[[], float] = time.time,
        max_token_lifetime_s: float = MAX_TOKEN_LIFETIME_S,
        clock_slack_s: float = CLOCK_SLACK_S,
    ) -> None:
        """``key`` is the platform key (``CLRK_EGRESS_TOKEN_KEY[_FILE]``), never used as is:
        each token is verified with the key derived from it for the token's namespace."""
        self._key = key
        self._clock = clock
        self._max_token_lifetime_s = max_token_lifetime_s
        self._revoked = Revocations(slack_s=clock_slack_s)
        self._tunnels: weakref.WeakKeyDictionary[connection.Client, ProxyClaims] = weakref.WeakKeyDictionary()

    @property
    def revocations(self) -> Revocations:
        """The revoked ids still kept (read-only use: sizes, tests)."""
        return self._revoked

    def revoke(self, invocation_id: str, expires_at: float | None = None) -> None:
        """End an invocation's credentials now (open tunnels included).

        The id is kept until ``expires_at``, its token's expiry (``ProxyClaims.expires_at``),
        when the caller knows it, else until now + :data:`MAX_TOKEN_LIFETIME_S`; past that its
        token is refused as expired anyway. Amortised O(1): nothing is rebuilt.
        """
        now = self._clock()
        if expires_at is None:
            expires_at = now + self._max_token_lifetime_s
        self._revoked.add(invocation_id, expires_at, now=now)

    def is_revoked(self, invocation_id: str) -> bool:
        self._revoked.forget_expired(self._clock())
        return invocation_id in self._revoked

    def authenticate(self, header: str) -> ProxyClaims:
        """Claims for a ``Proxy-Authorization`` value; :class:`InvalidToken` says why not."""
        creds = parse_proxy_authorization(header) if header else None
        if creds is None:
            raise InvalidToken("missing proxy credentials" if not header else "malformed credentials")
        user, token = creds
        agent = claimed_agent(token)  # untrusted: it only picks the key to verify with
        try:
            namespace = namespace_of(agent)
        except ValueError:
            raise InvalidToken("malformed claims: the agent is not namespace/name") from None
        key = namespace_key(self._key, "proxy-token", namespace)
        claims = verify(token, key, now=self._clock(), invocation_id=user)
        if self.is_revoked(claims.invocation_id):
            raise InvalidToken("invocation ended")
        return claims

    def _deny(self, flow: http.HTTPFlow, reason: str) -> None:
        log.warning(
            "egress 407: %s %s from %s: %s",
            flow.request.method,
            flow.request.pretty_host,
            flow.client_conn.peername,
            reason,
        )
        flow.response = proxy_auth_required(reason)

    def _check(self, flow: http.HTTPFlow) -> ProxyClaims | None:
        header = flow.request.headers.get("proxy-authorization", "")
        try:
            claims = self.authenticate(header)
        except InvalidToken as exc:
            self._deny(flow, str(exc))
            return None
        del flow.request.headers["proxy-authorization"]
        flow.metadata[CLAIMS] = claims
        return claims

    # -- mitmproxy hooks ------------------------------------------------------------------------

    def http_connect(self, flow: http.HTTPFlow) -> None:
        claims = self._check(flow)
        if claims is not None:
            self._tunnels[flow.client_conn] = claims

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        claims = self._tunnels.get(flow.client_conn)
        if claims is None:
            self._check(flow)
            return
        if self.is_revoked(claims.invocation_id) or self._clock() >= claims.expires_at:
            log.warning("egress 403: invocation %s ended; tunnel refused", claims.invocation_id)
            flow.response = forbidden(flow.request.pretty_host, claims.agent, "invocation ended", claims.invocation_id)
            return
        flow.metadata[CLAIMS] = claims
