"""Async invocations at the ingress: accepting one (``202``) and the ``/invocations/<id>`` routes.

``POST /`` with ``Prefer: respond-async`` goes through the same admission as a synchronous call
(Caller key, agent, body cap, envelope), then :func:`accept` stores the run, hands it to the
:class:`~clrk.ingress.dispatching.Dispatcher` and answers ``202`` with ``Location``,
``X-Clrk-Invocation-Id``, ``Preference-Applied: respond-async`` and the status document. An
ingress without :class:`AsyncRuns` ignores the preference (RFC 7240 lets a server ignore any) and
answers synchronously, without ``Preference-Applied``.

The routes (:func:`invocation_routes`, contract in :mod:`clrk_runtime.protocol.invocations`) ask
for the same Caller key as ``POST /`` and show a caller only its own runs: another caller's id,
an unknown id and a string that is no invocation id all get the same 404
``unknown_invocation`` (in open mode every run is visible).

``GET …/result`` answers what the synchronous call would have: the stored body and content type
with the status it had (a failed run's ``502`` JSON error included), and
``X-Clrk-Invocation-Status`` (the run's state). Before the end: 404 ``result_not_ready``; once
the result was dropped (retention, or the size cap): 410 ``result_expired``; a cancelled run has
none: 409 ``invocation_cancelled`` (its ``outcome`` event says the same: status 409, error
``cancelled``).

``GET …/events`` gives the status document, every output line from the first (or past
``Last-Event-ID``: each ``output`` event's id is its line's number), the status again when it
changed, and the outcome (with the exact body as ``body`` when asked with
``X-Clrk-Outcome-Body: base64``). A stream the ingress cuts because it stops ends without an
outcome: its reader comes back (with ``Last-Event-ID``) to another replica, or after the restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from clrk.ingress.callbacks import check_callback_url
from clrk.ingress.callers import CallerKeys
from clrk.ingress.dispatching import Dispatcher
from clrk.ingress.forwarding import AgentTarget
from clrk.ingress.problems import Problem, problem_response
from clrk.ingress.records import CallbackState, RunRecord, RunStore
from clrk_runtime.protocol.headers import INVOCATION_HEADER, RepeatedHeader, decimal, request_headers
from clrk_runtime.protocol.ids import is_invocation_id
from clrk_runtime.protocol.invocations import (
    ASYNC_PREFERENCE,
    CALLBACK_HEADER,
    INVOCATIONS_PATH,
    Status,
    invocation_path,
)
from clrk_runtime.protocol.streams import (
    HEARTBEAT,
    HEARTBEAT_S,
    OUTCOME_BODY_HEADER,
    OUTPUT,
    STATUS,
    STREAM_HEADERS,
    Outcome,
    encode_event,
    opening,
)

__all__ = ["STATUS_HEADER", "AsyncRuns", "accept", "callback_url", "invocation_routes"]

log = logging.getLogger("clrk.ingress")

STATUS_HEADER = "X-Clrk-Invocation-Status"
"""On ``GET …/result``: the run's state (``succeeded``, ``failed``, ``timed_out``)."""
CANCELLED_STATUS = 409
"""The status a cancelled run's ``outcome`` event and ``…/result`` carry (it has no answer)."""
_QUEUE = 256
"""Lines held between a store's follower and a slow reader of ``…/events``."""


@dataclass(frozen=True, slots=True)
class AsyncRuns:
    """What the ingress needs for async invocations: where runs are kept, who runs them, and
    the settings of both."""

    store: RunStore
    dispatcher: Dispatcher
    retention_s: float = 86400.0
    """How long a finished run (and its result) is kept."""
    heartbeat_s: float = HEARTBEAT_S
    """Seconds of silence on ``…/events`` before a heartbeat comment."""
    allow_loopback_callbacks: bool = False
    """Whether a callback may go to a loopback address (``clrk dev``: yes; a cluster: no)."""
    clock: Callable[[], float] = field(default=time.time)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by the server as it stops: every ``…/events`` stream ends at once, without an outcome
    (its reader comes back with ``Last-Event-ID``), so that no stream holds the shutdown."""


def callback_url(headers: Mapping[str, str], target: AgentTarget, runs: AsyncRuns) -> str | None:
    """Where the run's callback goes: ``X-Clrk-Callback-Url``, else the agent's
    ``spec.callback.url``; 400 ``invalid_callback_url`` naming the header (or field) when it is
    not a URL the ingress may call."""
    given = headers.get(CALLBACK_HEADER.lower())
    where = f"header {CALLBACK_HEADER}"
    if given is None:
        given, where = target.callback_url, f"TaskAgent {target.ref} spec.callback.url"
    if given is None:
        return None
    try:
        return check_callback_url(given.strip(), allow_loopback=runs.allow_loopback_callbacks)
    except ValueError as exc:
        raise Problem(400, "invalid_callback_url", f"{where}: {exc}") from None


async def accept(
    runs: AsyncRuns,
    *,
    invocation_id: str,
    target: AgentTarget,
    caller: str | None,
    envelope: bytes,
    timeout_s: float,
    callback: str | None,
    traceparent: str | None,
) -> Response:
    """Store the run, hand it to the dispatcher and answer ``202``."""
    record = RunRecord(
        invocation_id=invocation_id,
        agent=target.ref,
        caller=caller,
        envelope=envelope,
        timeout_s=timeout_s,
        created_at=runs.clock(),
        callback=None if callback is None else CallbackState(callback),
        traceparent=traceparent,
    )
    await runs.store.create(record)
    try:
        await runs.dispatcher.submit(record)
    except Exception:
        log.exception("invocation %s: it could not be queued", invocation_id)
        now = runs.clock()
        error = {"type": "not_queued", "message": "the invocation could not be queued"}
        failed = record.replace(status=Status.FAILED, finished_at=now, expires_at=now + runs.retention_s, error=error)
        await runs.store.transition(invocation_id, frozenset({Status.QUEUED}), failed)
        raise Problem(503, "not_queued", "the invocation could not be queued; retry", {"Retry-After": "1"}) from None
    headers = {
        "Location": invocation_path(invocation_id),
        INVOCATION_HEADER: invocation_id,
        "Preference-Applied": ASYNC_PREFERENCE,
    }
    return JSONResponse(record.document(), status_code=202, headers=headers)


def invocation_routes(runs: AsyncRuns, callers: CallerKeys) -> list[BaseRoute]:
    """``/invocations/<id>`` (GET, DELETE), ``…/result`` and ``…/events`` (GET)."""

    async def visible(request: Request, methods: tuple[str, ...]) -> RunRecord:
        """The run the path names, if the request's caller may see it (else the 404)."""
        if request.method not in methods:  # the message never echoes the path
            allowed = ", ".join(methods)
            raise Problem(405, "method_not_allowed", f"{request.method}: only {allowed} here", {"Allow": allowed})
        try:
            given = request_headers(request.headers.raw)
        except RepeatedHeader as exc:
            raise Problem(400, exc.kind, exc.message) from None
        key = callers.authenticate(given.get("authorization"))
        invocation_id = str(request.path_params["invocation_id"])
        record = await runs.store.get(invocation_id) if is_invocation_id(invocation_id) else None
        if record is None or (key is not None and record.caller != key.name):
            raise Problem(404, "unknown_invocation", "no such invocation (or not yours)")
        return record

    async def status(request: Request) -> Response:
        record = await visible(request, ("GET", "DELETE"))
        invocation_id = record.invocation_id
        if request.method == "GET":
            return JSONResponse(record.document(), headers={INVOCATION_HEADER: invocation_id})
        if not record.final:
            after = await runs.dispatcher.cancel(invocation_id)
            if after is None:
                raise Problem(404, "unknown_invocation", "no such invocation (or not yours)")
            record = after
            if record.status is Status.CANCELLED and record.finished_at is not None:
                return JSONResponse(record.document(), headers={INVOCATION_HEADER: invocation_id})
        problem = Problem(409, "already_finished", f"the invocation ended ({record.status}) before it was cancelled")
        return problem_response(problem, invocation_id)

    async def result(request: Request) -> Response:
        record = await visible(request, ("GET",))
        invocation_id = record.invocation_id
        if not record.final:
            problem = Problem(404, "result_not_ready", f"the invocation is {record.status}", {"Retry-After": "1"})
            return problem_response(problem, invocation_id)
        if record.status is Status.CANCELLED:
            cancelled = Problem(CANCELLED_STATUS, "invocation_cancelled", "the invocation was cancelled: no result")
            return problem_response(cancelled, invocation_id)
        stored = None
        if not record.result_expired and (record.expires_at is None or record.expires_at > runs.clock()):
            stored = await runs.store.result(invocation_id)
        if stored is None:
            return problem_response(Problem(410, "result_expired", "the result is no longer kept"), invocation_id)
        headers = {"content-type": stored.content_type, INVOCATION_HEADER: invocation_id, STATUS_HEADER: record.status}
        return Response(stored.body, status_code=stored.http_status, headers=headers)

    async def events(request: Request) -> Response:
        record = await visible(request, ("GET",))
        after = decimal(request.headers.get("last-event-id", "").strip(), 18) or 0
        with_body = request.headers.get(OUTCOME_BODY_HEADER.lower(), "").strip().lower() == "base64"
        headers = {**dict(STREAM_HEADERS), INVOCATION_HEADER: record.invocation_id}
        return StreamingResponse(_events(runs, record, after, with_body), headers=headers)

    path = f"{INVOCATIONS_PATH}/{{invocation_id}}"
    every = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return [
        Route(path, status, methods=every),
        Route(f"{path}/result", result, methods=every),
        Route(f"{path}/events", events, methods=every),
    ]


async def _events(runs: AsyncRuns, record: RunRecord, after: int, with_body: bool) -> AsyncIterator[bytes]:
    """``…/events``: the status document, each output line past ``after``, heartbeats in
    silences, the status again at each change seen, and the outcome."""
    invocation_id = record.invocation_id
    yield opening(invocation_id)
    yield encode_event(STATUS, json.dumps(record.document()))
    shown = record.status
    lines: asyncio.Queue[tuple[int, str] | str | None] = asyncio.Queue(_QUEUE)

    async def pump() -> None:
        follower = runs.store.follow(invocation_id, after)
        try:
            async for line in follower:
                await lines.put(line)
        finally:
            close = getattr(follower, "aclose", None)
            if close is not None:  # a reader gone: the store's follower ends now
                await close()
        await lines.put(None)

    async def changed() -> RunRecord | None:
        nonlocal shown
        current = await runs.store.get(invocation_id)
        if current is None or current.status == shown:
            return None
        shown = current.status
        return current

    async def stop() -> None:
        await runs.stopping.wait()
        await lines.put("stop")

    last = after
    pumping = asyncio.create_task(pump())
    stopping = asyncio.create_task(stop())
    try:
        while True:
            try:
                async with asyncio.timeout(runs.heartbeat_s):
                    item = await lines.get()
            except TimeoutError:
                if pumping.done() and lines.empty():  # the follower failed (logged below)
                    break
                yield HEARTBEAT
                if (current := await changed()) is not None:
                    yield encode_event(STATUS, json.dumps(current.document()))
                continue
            if item is None:
                break
            if isinstance(item, str):  # the server stops: the reader will come back
                return
            if shown is Status.QUEUED and (current := await changed()) is not None:
                yield encode_event(STATUS, json.dumps(current.document()))
            last, text = item
            yield encode_event(OUTPUT, text, last)
    finally:
        pumping.cancel()
        stopping.cancel()
        failure, _ = await asyncio.gather(pumping, stopping, return_exceptions=True)
        if isinstance(failure, Exception):
            log.error("invocation %s: following its output failed", invocation_id, exc_info=failure)
    final = await runs.store.get(invocation_id)
    if final is None:
        gone = Outcome(invocation_id, 410, error={"type": "result_expired", "message": "the invocation was dropped"})
        yield gone.encode(last + 1)
        return
    if final.status != shown:
        yield encode_event(STATUS, json.dumps(final.document()))
    yield (await _outcome(runs, final, with_body)).encode(last + 1)


async def _outcome(runs: AsyncRuns, record: RunRecord, with_body: bool) -> Outcome:
    if record.status is Status.CANCELLED:
        error = record.error or {"type": "cancelled", "message": "the invocation was cancelled"}
        return Outcome(record.invocation_id, CANCELLED_STATUS, record.exit_code, "application/json", error)
    body = None
    if with_body:
        stored = await runs.store.result(record.invocation_id)
        body = None if stored is None else stored.body
    status = record.http_status if record.http_status is not None else 502
    return Outcome(record.invocation_id, status, record.exit_code, record.content_type, record.error, body)
