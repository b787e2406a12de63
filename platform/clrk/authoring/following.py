"""Following an invocation's events: ``clrk invoke --follow`` and ``clrk invocations events``.

A streamed answer (:mod:`clrk_runtime.protocol.streams`) is read with ``httpx-sse``: each
``output`` event is handed on as it arrives (the CLI prints it at once), ``status`` events too
(``GET /invocations/<id>/events`` sends them), heartbeats and unknown events are skipped, and the
``outcome`` event ends it. What the caller gets back is the :class:`InvocationResult` a buffered
call would have had, so the CLI reports both alike: an answer that is not a stream (a refusal:
400, 401, 404, 503 …) as it came, an outcome as its status with its error object as the body.

Pure: :func:`outcome_result`. The I/O edge is :func:`follow`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httpx
from httpx_sse import EventSource, SSEError, connect_sse

from clrk.authoring.invoking import InvocationResult
from clrk.errors import ClrkError
from clrk_runtime.protocol.headers import INVOCATION_HEADER
from clrk_runtime.protocol.streams import EVENT_STREAM, HEARTBEAT_S, OUTCOME, OUTPUT, STATUS, Outcome

__all__ = ["EVENTS_TIMEOUT", "Followed", "follow", "outcome_result"]

EVENTS_TIMEOUT = httpx.Timeout(4 * HEARTBEAT_S, connect=10.0)
"""For ``GET /invocations/<id>/events``, which opens at once and sends a heartbeat every
:data:`~clrk_runtime.protocol.streams.HEARTBEAT_S` seconds: this much silence is a dead stream."""


@dataclass(frozen=True, slots=True)
class Followed:
    result: InvocationResult
    """What a buffered call would have answered (for a stream: its outcome; the lines are not in
    the body, they were handed on already)."""
    streamed: bool
    """Whether the answer was a stream (else it is a plain answer, printed as one)."""


def outcome_result(outcome: Outcome, duration: float) -> InvocationResult:
    """The buffered answer an ``outcome`` event stands for: its status, and as its body the exact
    bytes when the outcome carries them, else its error object (``{"error": …}``), else nothing."""
    body = outcome.body
    if body is None:
        body = json.dumps({"error": outcome.error}).encode() if outcome.error is not None else b""
    headers = {INVOCATION_HEADER.lower(): outcome.invocation_id} if outcome.invocation_id else {}
    if outcome.content_type:
        headers["content-type"] = outcome.content_type
    try:
        reason = HTTPStatus(outcome.status).phrase
    except ValueError:
        reason = ""
    return InvocationResult(outcome.status, reason, body, headers, duration)


def follow(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    on_output: Callable[[str], None],
    on_status: Callable[[dict[str, Any]], None] | None = None,
    body: bytes | None = None,
    timeout: httpx.Timeout = EVENTS_TIMEOUT,
) -> Followed:
    """Send the request with ``Accept: text/event-stream``; hand each ``output`` line to
    ``on_output`` and each ``status`` document to ``on_status`` as they arrive. :class:`ClrkError`
    when nothing answers, when the stream goes silent past ``timeout``, or when it ends before
    its outcome."""
    started = time.monotonic()
    invocation: str | None = None
    try:
        with connect_sse(client, method, url, headers=dict(headers), content=body, timeout=timeout) as source:
            response = source.response
            invocation = response.headers.get(INVOCATION_HEADER)
            if EVENT_STREAM not in response.headers.get("content-type", ""):
                response.read()
                result = InvocationResult(
                    response.status_code,
                    response.reason_phrase,
                    response.content,
                    {k.lower(): v for k, v in response.headers.items()},
                    time.monotonic() - started,
                )
                return Followed(result, streamed=False)
            outcome = _read(source, on_output, on_status)
    except httpx.TimeoutException:
        where = f"the events of invocation {invocation}" if invocation else url
        raise ClrkError(f"{where}: no event within {timeout.read:g}s") from None
    except (httpx.HTTPError, SSEError) as exc:
        if invocation is None:
            raise ClrkError(
                f"{url}: nothing answers there ({type(exc).__name__}); start one with `clrk dev` or pass --url"
            ) from None
        raise ClrkError(f"the events of invocation {invocation} broke off ({type(exc).__name__})") from None
    if outcome is None:
        raise ClrkError(f"the events of invocation {invocation or 'unknown'} ended before their outcome")
    return Followed(outcome_result(outcome, time.monotonic() - started), streamed=True)


def _read(
    source: EventSource,
    on_output: Callable[[str], None],
    on_status: Callable[[dict[str, Any]], None] | None,
) -> Outcome | None:
    for event in source.iter_sse():  # heartbeats are comments; httpx-sse may yield them as "message"
        if event.event == OUTPUT:
            on_output(event.data)
        elif event.event == STATUS and on_status is not None:
            document = _json(event.data)
            if isinstance(document, dict):
                on_status(document)
        elif event.event == OUTCOME:
            try:
                return Outcome.parse(event.data)
            except ValueError as exc:
                raise ClrkError(f"a malformed outcome event: {exc}") from None
    return None


def _json(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None
