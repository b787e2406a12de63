"""The callback of an async invocation: a signed CloudEvent POSTed where the caller asked, once.

When a run ends (succeeded, failed, timed out, cancelled, cut by a restart), the ingress POSTs one
structured CloudEvent (``application/cloudevents+json``) to the run's callback URL::

    {"specversion": "1.0", "type": "dev.clrk.invocation.finished", "source": "/clrk/ingress",
     "id": "<invocation id>", "subject": "<invocation id>", "time": "…Z",
     "clrkinvocationid": "<invocation id>", "datacontenttype": "application/json",
     "data": {<the status document, without "callback">,
              "result": {"contentType": "…", "body": "<text>"}}}        ("bodyBase64" when not UTF-8)

signed the Standard Webhooks way (``webhook-id`` = the invocation id, ``webhook-timestamp``,
``webhook-signature: v1,<base64 HMAC-SHA256>``), so a receiver verifies it with the
``standardwebhooks`` library of its language and the secret of the agent's namespace:
``whsec_`` + base64 of :func:`~clrk_runtime.protocol.keys.namespace_key` (``callback``) of the
platform key (:func:`callback_secret`). ``clrk dev`` keeps a callback key of its own in its state
directory (its platform key changes at every start) and writes each namespace's secret beside it.

Delivery: an answer 2xx is delivered; 410 stops (the receiver is gone for good); anything else,
or no answer, is tried again after 1, 2, 4 … seconds up to :attr:`CallbackSender.attempts` tries,
each recorded in the run's ``callback`` (``state``, ``attempts``, ``lastStatus``, ``lastError``).
The same bytes go at every try (receivers deduplicate by ``webhook-id``); the signature is fresh.

URLs are checked when the run is accepted (:func:`check_callback_url`: 400
``invalid_callback_url``) and the host's addresses again before each try, so a name that later
resolves to a link-local (cloud metadata) address gets nothing.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
from standardwebhooks import Webhook

from clrk.ingress.records import CallbackState, Result, RunRecord, RunStore
from clrk_runtime.protocol.durations import rfc3339
from clrk_runtime.protocol.keys import namespace_of, webhook_secret

__all__ = [
    "CALLBACK_CONTENT_TYPE",
    "FINISHED_EVENT_TYPE",
    "CallbackSender",
    "callback_event",
    "callback_secret",
    "check_callback_url",
]

log = logging.getLogger("clrk.ingress.callbacks")

FINISHED_EVENT_TYPE = "dev.clrk.invocation.finished"
CALLBACK_CONTENT_TYPE = "application/cloudevents+json"
EVENT_SOURCE = "/clrk/ingress"
_MAX_URL = 2048
_METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "metadata.goog"})
"""Names that reach a cloud's instance metadata whatever they resolve to."""


callback_secret = webhook_secret
"""The Standard Webhooks secret (``whsec_`` + base64) of a namespace's ``callback`` key."""


def _forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_loopback: bool) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if address.is_unspecified or address.is_multicast:
        return "not a unicast address"
    if address.is_loopback and not allow_loopback:
        return "a loopback address (the ingress itself)"
    return None


def check_callback_url(url: str, *, allow_loopback: bool) -> str:
    """``url`` when it is one the ingress may POST a callback to, else ValueError saying why:
    ``http``/``https`` only, a host and no user info, and no link-local or metadata address
    (nor loopback, unless ``allow_loopback``: ``clrk dev``'s receivers run on the same machine,
    a cluster ingress's never do)."""
    if len(url) > _MAX_URL:
        raise ValueError(f"longer than {_MAX_URL} characters")
    if not url.isascii() or any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in url):
        raise ValueError("must be ASCII without spaces or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError as exc:
        raise ValueError(f"not a URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("expected an http:// or https:// URL")
    if "@" in parts.netloc:
        raise ValueError("user info (user:password@) is not allowed")
    if not host:
        raise ValueError("no host")
    if host.rstrip(".") in _METADATA_HOSTS:
        raise ValueError("a cloud metadata host")
    if host.rstrip(".") == "localhost" and not allow_loopback:
        raise ValueError("a loopback address (the ingress itself)")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return url  # a name: its addresses are checked before each try
    reason = _forbidden(address, allow_loopback)
    if reason:
        raise ValueError(reason)
    return url


def callback_event(record: RunRecord, result: Result | None) -> bytes:
    """The CloudEvent's bytes: the same at every try of one run."""
    data = record.document()
    data.pop("callback", None)
    if result is not None:
        try:
            data["result"] = {"contentType": result.content_type, "body": result.body.decode("utf-8")}
        except UnicodeDecodeError:
            encoded = base64.b64encode(result.body).decode("ascii")
            data["result"] = {"contentType": result.content_type, "bodyBase64": encoded}
    else:
        data["result"] = None
    event = {
        "specversion": "1.0",
        "type": FINISHED_EVENT_TYPE,
        "source": EVENT_SOURCE,
        "id": record.invocation_id,
        "subject": record.invocation_id,
        "time": rfc3339(record.finished_at if record.finished_at is not None else time.time()),
        "datacontenttype": "application/json",
        "clrkinvocationid": record.invocation_id,
        "data": data,
    }
    return json.dumps(event, separators=(",", ":")).encode()


class CallbackSender:
    """Sends runs' callbacks. ``secret(namespace)``: the Standard Webhooks secret of an agent
    namespace (:func:`callback_secret`). ``attempts`` tries, the n-th retry after
    ``backoff * 2**(n-1)`` seconds (at most ``max_backoff``), each waiting ``timeout`` seconds
    for an answer."""

    def __init__(
        self,
        store: RunStore,
        secret: Callable[[str], str],
        *,
        allow_loopback: bool,
        attempts: int = 8,
        backoff: float = 1.0,
        max_backoff: float = 300.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._secret = secret
        self._allow_loopback = allow_loopback
        self.attempts = attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._clock = clock
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False)

    async def deliver(self, record: RunRecord, result: Result | None) -> RunRecord:
        """Send ``record``'s callback until it is delivered, refused for good or out of tries;
        the record as last written. A record without a callback is returned as it is."""
        if record.callback is None:
            return record
        body = callback_event(record, result)
        webhook = Webhook(self._secret(namespace_of(record.agent)))
        state = record.callback
        try:
            for attempt in range(1, self.attempts + 1):
                if attempt > 1:
                    await asyncio.sleep(min(self._max_backoff, self._backoff * 2 ** (attempt - 2)))
                status, error = await self._try(state.url, record.invocation_id, body, webhook)
                delivered = status is not None and 200 <= status < 300
                gone = status == 410
                done = delivered or gone or attempt == self.attempts
                state = CallbackState(
                    url=state.url,
                    state="delivered" if delivered else "failed" if done else "pending",
                    attempts=attempt,
                    last_status=status,
                    last_error=error,
                    delivered_at=self._clock() if delivered else None,
                )
                record = await self._write(record, state)
                if done:
                    break
        except asyncio.CancelledError:
            stopped = CallbackState(
                state.url, "failed", state.attempts, state.last_status, "the ingress stopped before it was delivered"
            )
            await asyncio.shield(self._write(record, stopped))
            raise
        if state.state == "failed":
            log.warning(
                "invocation %s: callback not delivered after %d attempt(s): %s",
                record.invocation_id,
                state.attempts,
                state.last_error or f"HTTP {state.last_status}",
            )
        return record

    async def _try(self, url: str, invocation_id: str, body: bytes, webhook: Webhook) -> tuple[int | None, str | None]:
        refused = await self._refused(url)
        if refused:
            return None, refused
        now = datetime.fromtimestamp(self._clock(), UTC)
        headers = {
            "content-type": CALLBACK_CONTENT_TYPE,
            "webhook-id": invocation_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": webhook.sign(invocation_id, now, body),
            "user-agent": "clrk-ingress",
        }
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: no answer"
        if 200 <= response.status_code < 300:
            return response.status_code, None
        return response.status_code, f"HTTP {response.status_code}"

    async def _refused(self, url: str) -> str | None:
        """Why ``url``'s host may not be called now (it resolves to a forbidden address)."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            ipaddress.ip_address(host)
            return None  # a literal address was checked when the run was accepted
        except ValueError:
            pass
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            return f"cannot resolve {host}: {exc.strerror or type(exc).__name__}"
        for info in infos:
            reason = _forbidden(ipaddress.ip_address(info[4][0]), self._allow_loopback)
            if reason:
                return f"{host} resolves to {reason}"
        return None

    async def _write(self, record: RunRecord, state: CallbackState) -> RunRecord:
        current = await self._store.get(record.invocation_id) or record
        updated = current.replace(callback=state)
        await self._store.update(updated)
        return updated

    async def aclose(self) -> None:
        await self._client.aclose()
