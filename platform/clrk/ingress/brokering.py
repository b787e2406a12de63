"""Async invocations in a cluster: each accepted run goes to Knative Eventing's Broker.

:class:`BrokerDispatcher` is a cluster's :class:`~clrk.ingress.dispatching.Dispatcher`. Once the
route stored a run (in Redis, envelope and all), :meth:`~BrokerDispatcher.submit` POSTs one
CloudEvent to the Broker ``clrk/clrk-invocations`` (its broker-ingress URL), in binary content
mode::

    POST http://broker-ingress.knative-eventing.svc.cluster.local/clrk/clrk-invocations
    ce-specversion: 1.0
    ce-type: dev.clrk.invocation.accepted
    ce-source: /clrk/ingress
    ce-id: <new UUID>                      (each submission its own)
    ce-subject: <invocation id>
    ce-clrkinvocationid: <invocation id>
    ce-clrksignature: <HMAC of the id>     (see run_signature)
    content-type: application/json

    {"invocationId": "<invocation id>"}

Only the id travels: the record in Redis holds the rest, so the Broker's channel never holds a
caller's body. The Trigger delivers the event to an ingress replica's worker route
(:mod:`~clrk.ingress.worker`), again and again until one answers 2xx. A Broker that refuses it
(non-2xx) or cannot be reached makes :meth:`~BrokerDispatcher.submit` raise, and the accepting
route answers 503 ``not_queued`` with the run marked failed: nothing is half accepted.

Anyone who can reach broker-ingress can post into the Broker, so the worker runs only what the
ingress sent: ``clrksignature`` is HMAC-SHA256 of a label naming the invocation, keyed by the
platform key (which only the ingress and the gateway mount), checked in constant time. Knative
passes extension attributes through to the subscriber and to the dead-letter sink unchanged.

Cancel (``DELETE /invocations/<id>``) goes through Redis: the run is marked cancelled there, and
the replica running it sees that at its runner's next look and leaves the stream (the shim then
kills the agent's tree).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
from collections.abc import Coroutine
from typing import Any

import httpx
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from clrk.ingress.app import EVENT_SOURCE
from clrk.ingress.records import RunRecord
from clrk.ingress.running import Runner
from clrk_runtime.protocol.invocations import Status

__all__ = [
    "ACCEPTED_EVENT_TYPE",
    "ID_EXTENSION",
    "SIGNATURE_EXTENSION",
    "BrokerDispatcher",
    "BrokerRefused",
    "accepted_event",
    "run_signature",
    "signed_by_platform",
]

log = logging.getLogger("clrk.ingress.brokering")

ACCEPTED_EVENT_TYPE = "dev.clrk.invocation.accepted"
"""The ``type`` the Trigger ``clrk-invocations`` filters on."""
ID_EXTENSION = "clrkinvocationid"
SIGNATURE_EXTENSION = "clrksignature"


class BrokerRefused(Exception):
    """The Broker answered a submission with something other than 2xx."""


def run_signature(platform_key: bytes, invocation_id: str) -> str:
    """What the worker checks before it runs ``invocation_id`` for the Broker: HMAC-SHA256 of a
    label naming the invocation, keyed by the platform key (URL-safe base64, 43 characters). The
    label's ``run`` part is no key purpose of :mod:`clrk_runtime.protocol.keys`, so no namespace
    key equals a signature."""
    if not platform_key:
        raise ValueError("the platform key is empty")
    digest = hmac.new(platform_key, f"clrk/v1/run/{invocation_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def signed_by_platform(platform_key: bytes, invocation_id: str, signature: str | None) -> bool:
    """Whether ``signature`` is the platform's for ``invocation_id`` (constant time)."""
    if not signature:
        return False
    expected = run_signature(platform_key, invocation_id).encode("ascii")
    return hmac.compare_digest(expected, signature.encode("utf-8", "surrogateescape"))


def accepted_event(invocation_id: str, platform_key: bytes) -> tuple[dict[str, str], bytes]:
    """The headers and body of the CloudEvent that asks for ``invocation_id`` to be run."""
    event = CloudEvent(
        {
            "type": ACCEPTED_EVENT_TYPE,
            "source": EVENT_SOURCE,
            "subject": invocation_id,
            "datacontenttype": "application/json",
            ID_EXTENSION: invocation_id,
            SIGNATURE_EXTENSION: run_signature(platform_key, invocation_id),
        },
        {"invocationId": invocation_id},
    )
    headers, body = to_binary(event)
    return dict(headers), bytes(body or b"")


class BrokerDispatcher:
    """Submits runs to the Broker at ``broker_url``; cancels through the store (``runner``'s).
    ``timeout``: how long one submission may take (connect and answer); ``stop_patience``: how
    long :meth:`aclose` lets callbacks of cancelled runs still try."""

    def __init__(
        self,
        broker_url: str,
        runner: Runner,
        platform_key: bytes,
        *,
        timeout: float = 10.0,
        stop_patience: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = broker_url
        self._runner = runner
        self._key = platform_key
        self._stop_patience = stop_patience
        self._client = httpx.AsyncClient(timeout=timeout, trust_env=False, follow_redirects=False, transport=transport)
        self._background: set[asyncio.Task[Any]] = set()

    async def submit(self, record: RunRecord) -> None:
        """POST the run's CloudEvent; raises (BrokerRefused, httpx.HTTPError) when the Broker did
        not take it."""
        headers, body = accepted_event(record.invocation_id, self._key)
        response = await self._client.post(self._url, headers=headers, content=body)
        if not response.is_success:
            raise BrokerRefused(f"the Broker answered HTTP {response.status_code} for {record.invocation_id}")
        log.debug("invocation %s: queued on the Broker", record.invocation_id)

    async def cancel(self, invocation_id: str) -> RunRecord | None:
        record = await self._runner.cancel(invocation_id)
        if record is not None and record.status is Status.CANCELLED:
            self._spawn(self._runner.notify(record))
        return record

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        if self._background:
            _, late = await asyncio.wait(set(self._background), timeout=self._stop_patience)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._client.aclose()
