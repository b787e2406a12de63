"""A stand-in for Knative Eventing's multi-tenant broker (``mt-broker``): broker-ingress and the
Trigger's delivery, enough of them for clrk's async invocations to run against.

The real one needs the Knative Eventing control plane (its controllers, a channel, the
broker-ingress and broker-filter Deployments), which cannot run here; this is the part of its
behaviour clrk relies on, as Knative documents it (eventing's ``pkg/broker`` and the
``DeliverySpec`` of ``eventing.knative.dev/v1``):

* **Ingress.** ``POST /<namespace>/<broker>`` takes one CloudEvent (binary or structured mode;
  anything else is a 400) and answers ``202 Accepted`` at once; the event is then delivered on its
  own, in the background.
* **Filter.** An event whose attributes do not all match the Trigger's ``filter.attributes`` is
  dropped.
* **Delivery.** The event is POSTed to the subscriber in binary mode (its ``ce-*`` headers, the
  same body), each attempt waiting up to ``timeout`` seconds. A 2xx is delivered (a body is a reply
  event: ignored here). 404, 408, 409, 429, any 5xx, a timeout and a connection error are retried:
  ``retry`` more attempts, the n-th retry after ``backoff_delay * 2**n`` seconds
  (``backoffPolicy: exponential``). Any other status is final at once. When delivery failed, the
  event goes to the dead-letter sink (once) with Knative's extensions added:
  ``knativeerrordest`` (the subscriber), ``knativeerrorcode`` (the last status, when there was one).
* **Many subscribers behind one Service.** ``subscribers`` is a list of base URLs: each attempt
  goes to the next (a Service's endpoints take turns), so a retry after a replica died reaches
  another.

What it does not do: persist events (the real one keeps them in its channel), reply events,
``retryAfterMax``, OIDC. Every attempt is recorded (:attr:`BrokerStandIn.attempts`) for tests.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import uvicorn
from cloudevents.conversion import to_binary
from cloudevents.exceptions import GenericException
from cloudevents.http import CloudEvent, from_http
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.serving import uvicorn_serving

__all__ = ["Attempt", "BrokerStandIn"]

_RETRIED = {404, 408, 409, 429}


@dataclass(frozen=True)
class Attempt:
    """One POST of an event to the subscriber or the dead-letter sink."""

    event_id: str
    target: str
    status: int | None
    """None: no answer (connection refused or reset, timeout)."""
    error: str = ""
    at: float = field(default_factory=time.monotonic)


class BrokerStandIn:
    """Broker ``namespace/name`` with one Trigger: ``subscribers`` (base URLs) + ``path``, and
    ``dead_letter`` (a full URL, or None), filtered on ``filter_attributes``."""

    def __init__(
        self,
        subscribers: Sequence[str],
        path: str,
        *,
        dead_letter: str | None = None,
        namespace: str = "clrk",
        name: str = "clrk-invocations",
        filter_attributes: dict[str, str] | None = None,
        retry: int = 12,
        backoff_delay: float = 1.0,
        timeout: float = 3720.0,
    ) -> None:
        self.subscribers = list(subscribers)
        self.path = path
        self.dead_letter = dead_letter
        self.route = f"/{namespace}/{name}"
        self.filter = dict(filter_attributes or {})
        self.retry = retry
        self.backoff_delay = backoff_delay
        self.timeout = timeout
        self.received: list[CloudEvent] = []
        self.attempts: list[Attempt] = []
        self.in_flight: dict[str, str] = {}
        """Event id → the URL an attempt is being made to right now."""
        self.delivered: dict[str, asyncio.Event] = {}
        self.dead: dict[str, asyncio.Event] = {}
        self._turns = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self.app = Starlette(routes=[Route(self.route, self._ingress, methods=["POST"])])

    async def _ingress(self, request: Request) -> Response:
        body = await request.body()
        try:
            event = from_http(dict(request.headers), body)
        except (GenericException, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        self.received.append(event)
        if all(event.get(k) == v for k, v in self.filter.items()):
            event_id = str(event["id"])
            self.delivered.setdefault(event_id, asyncio.Event())
            self.dead.setdefault(event_id, asyncio.Event())
            task = asyncio.create_task(self._deliver(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return Response(status_code=202)

    async def _post(self, client: httpx.AsyncClient, url: str, event: CloudEvent) -> Attempt:
        headers, data = to_binary(event)
        self.in_flight[str(event["id"])] = url
        try:
            response = await client.post(url, headers=dict(headers), content=data, timeout=self.timeout)
        except httpx.HTTPError as exc:
            attempt = Attempt(str(event["id"]), url, None, type(exc).__name__)
        else:
            attempt = Attempt(str(event["id"]), url, response.status_code)
        finally:
            self.in_flight.pop(str(event["id"]), None)
        self.attempts.append(attempt)
        return attempt

    async def _deliver(self, event: CloudEvent) -> None:
        event_id = str(event["id"])
        last: Attempt | None = None
        async with httpx.AsyncClient(trust_env=False) as client:
            for n in range(self.retry + 1):
                if n:
                    await asyncio.sleep(self.backoff_delay * 2 ** (n - 1))
                base = self.subscribers[next(self._turns) % len(self.subscribers)]
                last = await self._post(client, base + self.path, event)
                if last.status is not None and 200 <= last.status < 300:
                    self.delivered[event_id].set()
                    return
                if last.status is not None and last.status not in _RETRIED and last.status < 500:
                    break
            if self.dead_letter is not None:
                attributes = dict(event.get_attributes())
                attributes["knativeerrordest"] = last.target if last else ""
                if last is not None and last.status is not None:
                    attributes["knativeerrorcode"] = str(last.status)
                await self._post(client, self.dead_letter, CloudEvent(attributes, event.get_data()))
        self.dead[event_id].set()

    def attempts_for(self, event_id: str) -> list[Attempt]:
        return [a for a in self.attempts if a.event_id == event_id]

    def event_with(self, attribute: str, value: str) -> str | None:
        """The id of the first event received whose ``attribute`` is ``value``."""
        for event in list(self.received):
            if event.get(attribute) == value:
                return str(event["id"])
        return None

    @asynccontextmanager
    async def serving(self, host: str = "127.0.0.1") -> AsyncIterator[str]:
        """Listen on ``host`` and a free port; yields the broker's URL. Deliveries still under way
        at the end are cancelled."""
        config = uvicorn.Config(self.app, host=host, port=0, log_level="warning", lifespan="off")
        async with uvicorn_serving(config) as port:
            try:
                yield f"http://{host}:{port}{self.route}"
            finally:
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
