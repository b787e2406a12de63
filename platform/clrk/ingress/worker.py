"""The ingress as the Broker's subscriber: it runs the async invocations the Trigger delivers.

Two routes, on every replica (the Trigger's subscriber is the ingress Service):

``POST /_clrk/runs`` — one delivery of a ``dev.clrk.invocation.accepted`` CloudEvent
(:mod:`~clrk.ingress.brokering`). The answer tells the Broker whether to deliver it again:

==================================================  ==========================================
the run                                             answer
==================================================  ==========================================
unknown (never stored, or expired and dropped)      200: nothing to do (logged)
final                                               200: it ran already
queued                                              run it now; 200 when it ended
running, its lease held (another replica runs it)   503 + ``Retry-After``: deliver again later
running, no lease (its replica died)                run it again (``attempts`` + 1); 200 at its end
the agent was lost mid-run (:class:`RunLost`)       503: the Broker's next delivery runs it again
==================================================  ==========================================

A delivery is held open as long as its run goes (the Trigger's ``timeout`` covers the longest).
While it runs the replica renews the run's lease (:mod:`~clrk.ingress.leases`) every third of
its life; a replica that finds its lease gone (Redis lost it, another took it) leaves the run and
answers 503 rather than run it twice. A 2xx answer has no body, so Knative sees no reply event.

``POST /_clrk/runs/dead-letter`` — the Broker gave up (every retry failed, or a delivery was
refused for good): the run is marked failed, error ``delivery_failed``, unless it ended or a
replica holds its lease (that replica will end it), and its callback is sent.

Both routes run only what the ingress itself sent: an event without the platform's
``clrksignature`` for its id gets 403 (Knative does not retry a 403); a malformed one, 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any

from cloudevents.exceptions import GenericException
from cloudevents.http import from_http
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from clrk.ingress.brokering import ACCEPTED_EVENT_TYPE, ID_EXTENSION, SIGNATURE_EXTENSION, signed_by_platform
from clrk.ingress.invocations import STATUS_HEADER
from clrk.ingress.leases import RunLeases
from clrk.ingress.problems import Problem, problem_response
from clrk.ingress.records import Result, RunRecord, RunStore
from clrk.ingress.running import RunLost, Runner
from clrk_runtime.protocol.errors import error_body
from clrk_runtime.protocol.headers import INVOCATION_HEADER
from clrk_runtime.protocol.ids import is_invocation_id
from clrk_runtime.protocol.invocations import Status

__all__ = ["DEAD_LETTER_PATH", "DELIVERY_FAILED", "RUNS_PATH", "Worker"]

log = logging.getLogger("clrk.ingress.worker")

RUNS_PATH = "/_clrk/runs"
"""The Trigger's subscriber ``uri`` (on the ingress Service)."""
DEAD_LETTER_PATH = "/_clrk/runs/dead-letter"
"""The Trigger's ``deadLetterSink`` ``uri``."""
DELIVERY_FAILED = "delivery_failed"
"""The error type of a run the Broker gave up delivering."""
_MAX_EVENT_BYTES = 64 * 1024
"""The largest delivery read (the event's data is one id)."""
_BODY_PATIENCE_S = 30.0
"""The longest wait for a delivery's body (the Broker sends it at once)."""


class Worker:
    """Runs what the Broker delivers. ``platform_key``: checks each event's signature;
    ``retention_s``: how long a run failed here is kept; ``renew_every``: seconds between lease
    renewals (a third of the lease's life when not given)."""

    def __init__(
        self,
        store: RunStore,
        runner: Runner,
        leases: RunLeases,
        platform_key: bytes,
        *,
        retention_s: float = 86400.0,
        renew_every: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._runner = runner
        self._leases = leases
        self._key = platform_key
        self._retention = retention_s
        self._renew_every = renew_every if renew_every is not None else leases.ttl_s / 3
        self._clock = clock
        self._background: set[asyncio.Task[Any]] = set()

    def routes(self) -> list[BaseRoute]:
        """The two routes, for :func:`~clrk.ingress.app.create_app`'s ``extra_routes``."""
        return [
            Route(RUNS_PATH, self._deliver, methods=["POST"]),
            Route(DEAD_LETTER_PATH, self._dead_letter, methods=["POST"]),
        ]

    # -- the event ------------------------------------------------------------------------
    async def _invocation_id(self, request: Request) -> str:
        """The id the delivered event names, once its signature checked out (else a Problem)."""
        body = bytearray()
        try:
            async with asyncio.timeout(_BODY_PATIENCE_S):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > _MAX_EVENT_BYTES:
                        raise Problem(413, "payload_too_large", f"a run's event is at most {_MAX_EVENT_BYTES} bytes")
        except TimeoutError:
            raise Problem(408, "body_timeout", f"the event did not arrive within {_BODY_PATIENCE_S:g}s") from None
        try:
            event = from_http(dict(request.headers), bytes(body))
        except (GenericException, ValueError) as exc:
            raise Problem(400, "invalid_event", f"not a CloudEvent: {str(exc)[:200]}") from None
        if event["type"] != ACCEPTED_EVENT_TYPE:
            found = str(event["type"])[:80]
            raise Problem(400, "invalid_event", f"ce-type: expected {ACCEPTED_EVENT_TYPE}, found {found!r}")
        invocation_id = str(event.get(ID_EXTENSION) or "")
        if not is_invocation_id(invocation_id):
            raise Problem(400, "invalid_event", f"ce-{ID_EXTENSION}: not an invocation id")
        signature = event.get(SIGNATURE_EXTENSION)
        if not signed_by_platform(self._key, invocation_id, None if signature is None else str(signature)):
            raise Problem(403, "bad_signature", f"ce-{SIGNATURE_EXTENSION}: not the platform's for this invocation")
        return invocation_id

    # -- POST /_clrk/runs -----------------------------------------------------------------
    async def _deliver(self, request: Request) -> Response:
        try:
            invocation_id = await self._invocation_id(request)
        except Problem as problem:
            log.warning("a delivery was refused: %s", problem.message)
            return problem_response(problem)
        record = await self._store.get(invocation_id)
        if record is None:
            log.info("invocation %s: delivered, but unknown (expired, or never stored): nothing to do", invocation_id)
            return _done(invocation_id, "unknown")
        if record.final:
            return _done(invocation_id, str(record.status))
        if not await self._leases.acquire(invocation_id):
            left = await self._leases.remaining(invocation_id) or 1.0
            busy = Problem(
                503, "run_in_progress", "another ingress replica is running it", {"Retry-After": str(math.ceil(left))}
            )
            return problem_response(busy, invocation_id)
        try:
            return await self._run(record)
        finally:
            with contextlib.suppress(Exception):  # it expires on its own
                await self._leases.release(invocation_id)

    async def _run(self, record: RunRecord) -> Response:
        invocation_id = record.invocation_id
        resume = record.status is Status.RUNNING
        if resume:
            log.warning(
                "invocation %s: its runner was lost (no lease): running it again, attempt %d",
                invocation_id,
                record.attempts + 1,
            )
        work = asyncio.create_task(self._runner.execute(invocation_id, resume=resume))
        keeper = asyncio.create_task(self._keep_lease(invocation_id))
        try:
            await asyncio.wait({work, keeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, keeper):
                task.cancel()
            await asyncio.gather(work, keeper, return_exceptions=True)
        if not work.done() or work.cancelled():
            log.error("invocation %s: this replica lost its lease mid-run; left it to the next delivery", invocation_id)
            return problem_response(Problem(503, "lease_lost", "this replica lost the run's lease"), invocation_id)
        failure = work.exception()
        if isinstance(failure, RunLost):
            log.warning("invocation %s: %s; the Broker will deliver it again", invocation_id, failure)
            return problem_response(Problem(503, "agent_lost", str(failure), {"Retry-After": "1"}), invocation_id)
        if failure is not None:
            log.error("invocation %s: its run failed inside clrk", invocation_id, exc_info=failure)
            return problem_response(Problem(500, "internal_error", "the run failed inside clrk"), invocation_id)
        ended = work.result()
        return _done(invocation_id, "not run here" if ended is None else str(ended.status))

    async def _keep_lease(self, invocation_id: str) -> None:
        """Renew the lease until cancelled; return once it is no longer ours."""
        while True:
            await asyncio.sleep(self._renew_every)
            try:
                if not await self._leases.renew(invocation_id):
                    return
            except Exception as exc:  # Redis briefly away: try again at the next tick
                log.warning("invocation %s: lease not renewed: %s", invocation_id, type(exc).__name__)

    # -- POST /_clrk/runs/dead-letter -----------------------------------------------------
    async def _dead_letter(self, request: Request) -> Response:
        try:
            invocation_id = await self._invocation_id(request)
        except Problem as problem:
            log.warning("a dead letter was refused: %s", problem.message)
            return problem_response(problem)
        record = await self._store.get(invocation_id)
        if record is None or record.final:
            return _done(invocation_id, "unknown" if record is None else str(record.status))
        if not await self._leases.acquire(invocation_id):  # a replica runs it: it will end it
            return _done(invocation_id, str(record.status))
        try:
            code = request.headers.get("ce-knativeerrorcode", "")
            failed = await self._fail(record, code if code.isdigit() else None)
        finally:
            with contextlib.suppress(Exception):
                await self._leases.release(invocation_id)
        return _done(invocation_id, str(failed.status) if failed else "ended meanwhile")

    async def _fail(self, record: RunRecord, code: str | None) -> RunRecord | None:
        """Mark ``record`` failed ``delivery_failed`` unless it ended meanwhile; send its callback."""
        last = f" (its last delivery got HTTP {code})" if code else ""
        message = f"the Broker gave up delivering this invocation to the ingress{last}"
        body = error_body(DELIVERY_FAILED, message, record.invocation_id)
        now = self._clock()
        failed = record.replace(
            status=Status.FAILED,
            finished_at=now,
            expires_at=now + self._retention,
            http_status=503,
            content_type="application/json",
            error=json.loads(body)["error"],
        )
        result = Result(503, "application/json", body)
        if not await self._store.finish(failed, result):
            return None
        log.error("invocation %s: %s", record.invocation_id, message)
        self._spawn(self._runner.notify(failed, result))
        return failed

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self, patience: float = 5.0) -> None:
        """Let callbacks still being sent try for ``patience`` seconds, then cancel them."""
        if self._background:
            _, late = await asyncio.wait(set(self._background), timeout=patience)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)


def _done(invocation_id: str, status: str) -> Response:
    """200 with no body (Knative reads a body as a reply event); the run's state in a header."""
    return Response(status_code=200, headers={INVOCATION_HEADER: invocation_id, STATUS_HEADER: status})
