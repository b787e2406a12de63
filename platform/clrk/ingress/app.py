"""The ingress ASGI app: ``POST /`` with ``X-Clrk-TaskAgent: <namespace>/<name>``.

It reads the headers by the protocol's one rule (a ``ce-id``, any ``ce-*``, ``Content-Type`` or
``X-Clrk-TaskAgent`` sent twice is a 400 naming it, as at the shim), authenticates the caller,
routes by the header, caps the body, mints the invocation id (never a caller's: a CloudEvent's own
``id`` travels in the envelope and keys nothing), builds the envelope (the runtime's one builder,
:func:`clrk_runtime.protocol.envelope.build_envelope`, so a request the ingress accepts is one
the shim accepts), passes the remaining deadline down and opens the server span that parents the
invocation. It forwards the envelope itself, as a structured CloudEvent, which the shim passes
through unchanged; the forwarder signs it (:mod:`clrk.ingress.forwarding`), so the signature's
body hash covers all the agent reads. Every error is JSON.

With ``Accept: text/event-stream`` the ingress asks the shim for events and relays them as they
come (:mod:`clrk.ingress.relaying`): always ending with an ``outcome`` event, the ingress's own
when the shim's stream breaks; a client that leaves closes the shim's request, which kills the
agent. A synchronous call, buffered or streamed, is cut at
:data:`~clrk_runtime.protocol.invocations.MAX_SYNC_TIMEOUT_S` whatever the agent's
``spec.timeout``.

``POST /_clrk/schedules/<namespace>/<agent>/<token>`` is the same path for a TaskSchedule's runs:
a PingSource posts its CloudEvent there (its sink's URL, which ``clrk apply`` and the operator
write), and cannot send a header of its own, so the path names the agent and carries the
credential: the schedule token the platform key makes for that agent alone
(:func:`clrk_runtime.protocol.keys.schedule_token`), checked in constant time. A wrong token and
an agent that is gone get the same 404. No Caller key is asked: whoever can read the PingSource
(its namespace's readers) can run that one agent.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import httpx
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from clrk.api.schedules import SCHEDULE_ROUTE
from clrk.ingress.callers import CallerKeys
from clrk.ingress.forwarding import AgentTarget, Forwarder
from clrk.ingress.invocations import AsyncRuns, accept, callback_url, invocation_routes
from clrk.ingress.openapi import openapi_document
from clrk.ingress.problems import Problem, problem_response
from clrk.ingress.relaying import EventRelay, RelayResponse
from clrk.ingress.settings import IngressSettings
from clrk_runtime.protocol.envelope import STRUCTURED, EnvelopeError, build_envelope
from clrk_runtime.protocol.headers import (
    AGENT_HEADER,
    INVOCATION_HEADER,
    TIMEOUT_HEADER,
    RepeatedHeader,
    decimal,
    request_headers,
)
from clrk_runtime.protocol.ids import new_invocation_id
from clrk_runtime.protocol.invocations import MAX_ASYNC_TIMEOUT_S, MAX_SYNC_TIMEOUT_S, wants_async
from clrk_runtime.protocol.keys import schedule_token
from clrk_runtime.protocol.streams import EVENT_STREAM, wants_stream

__all__ = ["EVENT_SOURCE", "InvocationRecord", "create_app"]

EVENT_SOURCE = "/clrk/ingress"
"""``source`` of the envelope the ingress makes for a request that is not a CloudEvent."""
_AGENT = AGENT_HEADER.lower()
_TIMEOUT = TIMEOUT_HEADER.lower()
_REF = re.compile(r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)/([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)$")
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
"""Every method reaches the handlers, which answer all but POST with the JSON 405."""
_tracer = trace.get_tracer("clrk.ingress")
log = logging.getLogger("clrk.ingress")

Admit = Callable[[Mapping[str, str]], tuple[AgentTarget, str | None]]
"""Reads a request's headers: the agent to run and the caller's name (None when there is no
caller to name), or raises the Problem that refuses it."""


@dataclass(frozen=True, slots=True)
class InvocationRecord:
    """One finished request, for the TUI's requests pane and the log."""

    invocation_id: str
    agent: str
    status: int
    duration: float
    caller: str | None
    at: float = field(default_factory=time.time)
    """Unix time the answer was sent (a stream's: when it ended)."""
    outcome_status: int | None = None
    """A streamed answer's ``outcome`` status (``status`` is then the stream's own 200)."""


def _headers(request: Request) -> dict[str, str]:
    """The request's headers, one value per (lower-cased) name; 400 for a header sent twice that
    must be sent once."""
    try:
        return request_headers(request.headers.raw)
    except RepeatedHeader as exc:
        raise Problem(400, exc.kind, exc.message) from None


def _ref(headers: Mapping[str, str]) -> str:
    """The ``<namespace>/<name>`` the agent header names (400 when missing or malformed)."""
    value = headers.get(_AGENT)
    if value is None:
        raise Problem(400, "missing_agent", f"header {AGENT_HEADER}: required, as <namespace>/<name>")
    if not _REF.match(value.strip()):
        shown = value if len(value) <= 80 else value[:80] + "…"
        raise Problem(
            400,
            "invalid_agent",
            f"header {AGENT_HEADER}: expected <namespace>/<name>, found {shown!r}",
        )
    return value.strip()


def _target(ref: str, forwarder: Forwarder) -> AgentTarget:
    """The agent ``ref`` names (404 when there is none): asked only once the caller may call it,
    so that a caller without a key cannot learn which agents exist."""
    target = forwarder.targets().get(ref)
    if target is None:
        raise Problem(404, "unknown_agent", f"no TaskAgent {ref}")
    return target


def _deadline(headers: Mapping[str, str], target: AgentTarget, limit: float = MAX_SYNC_TIMEOUT_S) -> float:
    """Seconds the invocation may run: the agent's ``spec.timeout``, cut at ``limit`` (a
    synchronous call's: :data:`MAX_SYNC_TIMEOUT_S`), or the caller's shorter ``X-Clrk-Timeout-Ms``."""
    longest = min(target.timeout, limit)
    value = headers.get(_TIMEOUT)
    if value is None:
        return longest
    milliseconds = decimal(value, 15)
    if not milliseconds:
        raise Problem(
            400,
            "invalid_timeout",
            f"header {TIMEOUT_HEADER}: expected a positive integer of milliseconds",
        )
    return min(longest, milliseconds / 1000)


def _relayed_headers(headers: Mapping[str, str], invocation_id: str) -> dict[str, str]:
    """A shim's answer headers as the caller gets them: the ingress's invocation id on them."""
    kept = {k: v for k, v in headers.items() if k.lower() != INVOCATION_HEADER.lower()}
    kept[INVOCATION_HEADER] = invocation_id
    return kept


async def _body(request: Request, limit: int, patience: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise Problem(413, "payload_too_large", f"body of {declared} bytes is over the {limit}-byte limit")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(patience):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Problem(413, "payload_too_large", f"body is over the {limit}-byte limit")
                chunks.append(chunk)
    except TimeoutError:
        # A body that never finishes arriving must not hold the connection (and a task) forever.
        raise Problem(
            408,
            "body_timeout",
            f"the body did not arrive within {patience:g}s ({size} bytes came)",
            {"Connection": "close"},
        ) from None
    return b"".join(chunks)


def _only_post(request: Request, where: str, does: str) -> None:
    """405 with ``Allow: POST`` for any other method (its message never echoes the path, which
    may hold a schedule token)."""
    if request.method != "POST":
        raise Problem(405, "method_not_allowed", f"{request.method} {where}: only POST {does}", {"Allow": "POST"})


def _scheduled(schedule_key: bytes | None, namespace: str, agent: str, token: str) -> bool:
    """Whether ``token`` is the platform's schedule token for ``namespace/agent``. The comparison
    takes the same time however much of a guess is right, so timing tells a guesser nothing."""
    if schedule_key is None or not _REF.match(f"{namespace}/{agent}"):
        return False
    expected = schedule_token(schedule_key, namespace, agent).encode("ascii")
    return hmac.compare_digest(expected, token.encode("utf-8", "surrogateescape"))


def create_app(
    forwarder: Forwarder,
    callers: CallerKeys,
    settings: IngressSettings,
    on_finished: Callable[[InvocationRecord], None] | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    *,
    schedule_key: bytes | None = None,
    runs: AsyncRuns | None = None,
) -> Starlette:
    """The ingress. ``schedule_key``: the platform key, which makes the schedule tokens; without
    it ``POST /_clrk/schedules/…`` answers 404 to every request. ``runs``: async invocations
    (``Prefer: respond-async`` and ``/invocations/…``, :mod:`clrk.ingress.invocations`); without
    it the preference is ignored (answered synchronously) and those routes are 404."""

    async def run(request: Request, name: str, agent: str, admit: Admit) -> Response:
        """One invocation: ``admit`` reads who may run which agent from the request's headers
        (a Problem when nobody may), the rest is the same for every route that runs an agent."""
        started = time.monotonic()
        invocation_id: str | None = None
        caller: str | None = None
        accepted = False  # an async invocation: on_finished hears of it when it ends, not at its 202
        span = _tracer.start_span(name, context=propagate.extract(request.headers), kind=SpanKind.SERVER)

        def finished(status: int, outcome_status: int | None = None) -> None:
            """The answer went (a stream's once it ended): close the span, tell ``on_finished``."""
            span.set_attribute("http.response.status_code", status)
            if outcome_status is not None:
                span.set_attribute("clrk.outcome.status", outcome_status)
            if max(status, outcome_status or 0) >= 500:
                span.set_status(Status(StatusCode.ERROR))
            span.end()
            if on_finished is not None and invocation_id is not None and not accepted:
                duration = time.monotonic() - started
                on_finished(
                    InvocationRecord(invocation_id, agent, status, duration, caller, outcome_status=outcome_status)
                )

        try:
            with trace.use_span(span, end_on_exit=False):
                span.set_attribute("http.request.method", "POST")
                try:
                    given = _headers(request)
                    target, caller = admit(given)
                    later = runs if runs is not None and wants_async(given.get("prefer")) else None
                    timeout = _deadline(given, target, MAX_SYNC_TIMEOUT_S if later is None else MAX_ASYNC_TIMEOUT_S)
                    callback = None if later is None else callback_url(given, target, later)
                    if later is None and forwarder.saturated(target):  # an async run waits for capacity
                        raise Problem(
                            503, "no_capacity", f"agent {target.ref} is at capacity; retry", {"Retry-After": "1"}
                        )
                    try:
                        body = await _body(request, settings.max_body_bytes, settings.body_timeout_seconds)
                    except ClientDisconnect:
                        raise Problem(400, "incomplete_body", "the body ended before its declared length") from None
                    minted = new_invocation_id()
                    try:
                        envelope = build_envelope(given, body, invocation_id=minted, source=EVENT_SOURCE)
                    except EnvelopeError as exc:
                        raise Problem(400, exc.kind, exc.message) from None
                    invocation_id = minted
                    span.set_attributes({"clrk.invocation.id": invocation_id, "clrk.agent": target.ref})
                    if caller is not None:  # whose invocation it is: clrk traces shows a caller its own
                        span.set_attribute("clrk.caller", caller)
                    if not envelope.wrapped:  # the caller's CloudEvent id, for finding it again
                        span.set_attribute("cloudevents.event_id", envelope.event_id)
                    headers = {"content-type": STRUCTURED, INVOCATION_HEADER: invocation_id}
                    headers[TIMEOUT_HEADER] = str(max(1, int((timeout - (time.monotonic() - started)) * 1000)))
                    propagate.inject(headers)
                    if later is not None:
                        response = await accept(
                            later,
                            invocation_id=invocation_id,
                            target=target,
                            caller=caller,
                            envelope=envelope.body,
                            timeout_s=timeout,
                            callback=callback,
                            traceparent=headers.get("traceparent"),
                        )
                        accepted = True
                    else:
                        response = await _answer(target, given, headers, envelope.body, timeout, invocation_id)
                except Problem as problem:
                    response = problem_response(problem, invocation_id)
                except Exception:
                    log.exception("invocation %s for %s failed inside clrk", invocation_id, agent)
                    failure = Problem(500, "internal_error", "clrk failed to run this invocation; see its logs")
                    response = problem_response(failure, invocation_id)
        except BaseException:
            span.end()
            raise
        if isinstance(response, RelayResponse):
            status = response.status_code
            response.finished = lambda outcome_status: finished(status, outcome_status)
        else:
            finished(response.status_code)
        return response

    async def _answer(
        target: AgentTarget,
        given: Mapping[str, str],
        headers: dict[str, str],
        body: bytes,
        seconds: float,
        invocation_id: str,
    ) -> Response:
        """The agent's answer to the envelope ``body`` (``seconds``: its deadline): forwarded to
        its shim with ``headers``, buffered, or relayed as it comes when the caller asked for
        events (``Accept: text/event-stream``) and the shim answers with them (a refusal is
        plain JSON)."""
        wait = seconds + settings.grace_seconds
        try:
            if wants_stream(given.get("accept")):
                headers["accept"] = given["accept"]
                return await _relayed(target, headers, body, wait, seconds, invocation_id)
            reply = await forwarder.forward(target, headers, body, wait)
        except httpx.TimeoutException:
            raise Problem(504, "deadline_exceeded", f"agent {target.ref} gave no answer within {seconds:g}s") from None
        except httpx.TransportError as exc:
            raise Problem(
                503,
                "agent_unavailable",
                f"agent {target.ref} cannot be reached: {type(exc).__name__}",
                {"Retry-After": "1"},
            ) from None
        return Response(reply.body, status_code=reply.status, headers=_relayed_headers(reply.headers, invocation_id))

    async def _relayed(
        target: AgentTarget, headers: dict[str, str], body: bytes, wait: float, seconds: float, invocation_id: str
    ) -> Response:
        """The shim's event stream passed on as it comes (:mod:`clrk.ingress.relaying`), or its
        refusal as it is. The forwarder's stream stays open until the relay ends."""
        deadline = asyncio.get_running_loop().time() + wait
        exits = AsyncExitStack()
        try:
            answer = await exits.enter_async_context(forwarder.stream(target, headers, body, wait))
            answer_headers = _relayed_headers(answer.headers, invocation_id)
            if answer.headers.get("content-type", "").partition(";")[0].strip().lower() == EVENT_STREAM:
                relay = EventRelay(answer.chunks, invocation_id, target.ref, deadline, seconds)
                return RelayResponse(relay, answer_headers, exits.aclose)  # it leaves the stream when it ends
            chunks = [chunk async for chunk in answer.chunks]
        except BaseException:
            await exits.aclose()
            raise
        await exits.aclose()
        return Response(b"".join(chunks), status_code=answer.status, headers=answer_headers)

    async def invoke(request: Request) -> Response:
        _only_post(request, "/", "invokes an agent")

        def admit(given: Mapping[str, str]) -> tuple[AgentTarget, str | None]:
            ref = _ref(given)
            caller = callers.authorize(given.get("authorization"), ref)
            return _target(ref, forwarder), caller

        return await run(request, "POST /", request.headers.get(AGENT_HEADER, ""), admit)

    async def scheduled(request: Request) -> Response:
        """A TaskSchedule's run, as its PingSource posts it: the path names the agent and carries
        its schedule token, the only credential (a PingSource sends no header of its own)."""
        _only_post(request, f"{SCHEDULE_ROUTE}/…", "runs a schedule")
        namespace, name = str(request.path_params["namespace"]), str(request.path_params["agent"])
        ref = f"{namespace}/{name}"

        def admit(given: Mapping[str, str]) -> tuple[AgentTarget, str | None]:
            token = str(request.path_params["token"])
            target = forwarder.targets().get(ref) if _scheduled(schedule_key, namespace, name, token) else None
            if target is None:  # one answer for a wrong token and for an agent that is gone
                raise Problem(404, "unknown_schedule", f"no schedule at this {SCHEDULE_ROUTE}/… path")
            return target, None

        return await run(request, f"POST {SCHEDULE_ROUTE}", ref, admit)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def healthz(request: Request) -> Response:
        # How many agents it routes, never which: a caller without a key learns no agent's name.
        return JSONResponse({"status": "ok", "agents": len(forwarder.targets())})

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return problem_response(exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return problem_response(Problem(exc.status_code, kind, f"{request.method} {request.url.path}: {exc.detail}"))

    return Starlette(
        routes=[
            Route("/", invoke, methods=list(_METHODS)),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route(f"{SCHEDULE_ROUTE}/{{namespace}}/{{agent}}/{{token}}", scheduled, methods=list(_METHODS)),
            *(invocation_routes(runs, callers) if runs is not None else ()),
            *extra_routes,
        ],
        exception_handlers={Problem: on_problem, HTTPException: on_http_error},
    )
