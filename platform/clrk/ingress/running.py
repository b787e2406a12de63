"""Running one accepted async invocation: claim it, stream it from the shim, keep its answer.

:meth:`Runner.execute` is what both dispatchers call (``clrk dev``'s in-process
:class:`~clrk.ingress.dispatching.LocalDispatcher`; a cluster's worker, on each delivery from the
Broker): it claims the stored run (``queued`` → ``running``, atomically, so one runner wins),
forwards its envelope to the agent's shim asking for events (``Accept: text/event-stream``) and
for the buffered answer's exact bytes in the outcome (``X-Clrk-Outcome-Body: base64``), appends
each stdout line to the run's event log as it comes (one store write per chunk received, not per
line), and stores the outcome as the run's result: the body, content type and status a
synchronous call would have answered. Then the callback (:mod:`.callbacks`).

Before the agent runs, the shim may refuse: a 503 (its pool is full) is tried again after its
``Retry-After`` until the run's deadline, since an accepted run must not be lost to a busy pool;
any other refusal is the run's result. A shim that cannot be reached or goes away mid-stream
fails the run ``agent_unavailable`` (``on_lost="fail"``, ``clrk dev``: nobody else would run it),
or raises :class:`RunLost` (``on_lost="raise"``: a cluster's worker answers its delivery with an
error, and the Broker delivers it again, which runs it again with ``resume=True``).

While it runs the runner looks at the stored run every ``poll_s`` seconds: once it was cancelled
(``DELETE /invocations/<id>``, on any replica) it leaves the stream, and the shim, seeing its
caller gone, kills the agent's whole tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

import httpx
from httpx_sse import EventSource
from opentelemetry import propagate, trace

from clrk.ingress.callbacks import CallbackSender
from clrk.ingress.forwarding import AgentTarget, Forwarder, Stream
from clrk.ingress.records import Result, RunRecord, RunStore, Usage
from clrk_runtime.protocol.envelope import STRUCTURED
from clrk_runtime.protocol.errors import error_body
from clrk_runtime.protocol.headers import INVOCATION_HEADER, TIMEOUT_HEADER, decimal
from clrk_runtime.protocol.invocations import Status, outcome_status
from clrk_runtime.protocol.streams import EVENT_STREAM, OUTCOME, OUTCOME_BODY_HEADER, OUTPUT, Outcome

__all__ = ["INTERRUPTED", "RunLost", "Runner", "UsageReader"]

log = logging.getLogger("clrk.ingress.running")
_tracer = trace.get_tracer("clrk.ingress")

UsageReader = Callable[[str], Awaitable[Usage | None]]
"""The model usage the egress gateway counted for an invocation (read once it ended)."""
INTERRUPTED = "interrupted"
"""The error type of a run cut by its runner's stop (``clrk dev`` stopped while it ran)."""
_BATCH = 500
"""Lines appended in one store write at most (a chunk with more is written in several)."""
_MAX_REFUSAL = 1024 * 1024
"""Bytes of a non-stream answer kept as the run's result (a shim's refusals are small JSON)."""


class RunLost(Exception):
    """The shim could not be reached, or went away before the outcome (``on_lost="raise"``)."""


class Runner:
    """Runs stored async invocations. ``retention_s``: how long a finished run's result is kept;
    ``grace_s``: extra wait past the deadline for the shim's own outcome; ``on_end``: told of each
    run that this runner (or :meth:`cancel`, :meth:`interrupt`) ended, once, before its callback."""

    def __init__(
        self,
        store: RunStore,
        forwarder: Forwarder,
        *,
        callbacks: CallbackSender | None,
        usage: UsageReader | None = None,
        retention_s: float = 86400.0,
        on_lost: Literal["fail", "raise"] = "fail",
        grace_s: float = 2.0,
        poll_s: float = 1.0,
        on_end: Callable[[RunRecord], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._forwarder = forwarder
        self._callbacks = callbacks
        self._usage = usage
        self._retention = retention_s
        self._on_lost = on_lost
        self._grace = grace_s
        self._poll = poll_s
        self._on_end = on_end
        self._clock = clock

    # -- the run ---------------------------------------------------------------------------
    async def execute(self, invocation_id: str, *, resume: bool = False) -> RunRecord | None:
        """Run the stored invocation to its end and send its callback; the final record, or None
        when this runner did not get it (unknown, already claimed, already final). ``resume``: it
        is a redelivery, so a run still ``running`` (its first runner was lost) is claimed again,
        its ``attempts`` counting one more."""
        record = await self._store.get(invocation_id)
        if record is None or record.final:
            return None
        expected = frozenset({Status.QUEUED, Status.RUNNING} if resume else {Status.QUEUED})
        claimed = record.replace(status=Status.RUNNING, started_at=None, attempts=record.attempts + 1)
        if not await self._store.transition(invocation_id, expected, claimed):
            return None
        context = propagate.extract({"traceparent": claimed.traceparent} if claimed.traceparent else {})
        with _tracer.start_as_current_span("clrk.invocation.async", context=context) as span:
            span.set_attributes(
                {"clrk.invocation.id": invocation_id, "clrk.agent": claimed.agent, "clrk.attempt": claimed.attempts}
            )
            outcome = await self._race(claimed)
            if outcome is None:  # cancelled meanwhile: whoever cancelled it ended it
                span.set_attribute("clrk.invocation.status", str(Status.CANCELLED))
                return await self._store.get(invocation_id)
            final, result, ended_here = await self._end(claimed, outcome)
            span.set_attribute("clrk.invocation.status", str(final.status))
        return await self.notify(final, result) if ended_here else final

    async def _race(self, record: RunRecord) -> Outcome | None:
        """The run's outcome, or None once the stored run became final elsewhere (a cancel)."""
        target = self._forwarder.targets().get(record.agent)
        if target is None:
            return _failure(record, 404, "unknown_agent", f"agent {record.agent} is no longer served")
        work = asyncio.create_task(self._attempts(record, target, self._clock() + record.timeout_s))
        watch = asyncio.create_task(self._watch(record.invocation_id))
        try:
            done, _ = await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, watch):
                task.cancel()
            await asyncio.gather(work, watch, return_exceptions=True)
        if work not in done:
            return None
        try:
            return work.result()
        except RunLost:
            raise
        except Exception:  # a run must never stay "running" for a fault of clrk's own
            log.exception("invocation %s failed inside clrk", record.invocation_id)
            return _failure(record, 500, "internal_error", "clrk failed to run this invocation; see its logs")

    async def _watch(self, invocation_id: str) -> None:
        while True:
            await asyncio.sleep(self._poll)
            current = await self._store.get(invocation_id)
            if current is None or current.final:
                return

    async def _attempts(self, record: RunRecord, target: AgentTarget, deadline: float) -> Outcome:
        """Forward until the shim takes it (503s tried again) and give its outcome. The run's
        ``started_at`` is written once the shim answers with its stream: the agent has a sandbox."""
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                return _deadline(record)
            headers = {
                "content-type": STRUCTURED,
                INVOCATION_HEADER: record.invocation_id,
                TIMEOUT_HEADER: str(max(1, int(remaining * 1000))),
                "accept": EVENT_STREAM,
                OUTCOME_BODY_HEADER: "base64",
            }
            propagate.inject(headers)
            retry: float | None = None
            try:
                async with asyncio.timeout(remaining + self._grace):
                    async with self._forwarder.stream(target, headers, record.envelope, remaining + self._grace) as got:
                        if _is_events(got):
                            started = record.replace(started_at=self._clock())
                            await self._store.transition(record.invocation_id, frozenset({Status.RUNNING}), started)
                            return await self._consume(record, got)
                        body = await _read(got.chunks)
                        if got.status == 503:
                            retry = _retry_after(got.headers)
                        else:
                            return _refusal(record, got, body)
            except (TimeoutError, httpx.TimeoutException):
                return _deadline(record)
            except (httpx.TransportError, RunLost) as exc:
                message = f"agent {record.agent} cannot be reached: {type(exc).__name__}"
                if isinstance(exc, RunLost):
                    message = f"agent {record.agent} went away before it answered"
                if self._on_lost == "raise":
                    raise RunLost(message) from exc
                return _failure(record, 503, "agent_unavailable", message)
            assert retry is not None
            jitter = 1 + random.random() / 2  # noqa: S311 (spreads retries; no secret)
            wait = min(retry * jitter, deadline - self._clock())
            log.info(
                "invocation %s: agent %s at capacity, trying again in %.1fs", record.invocation_id, target.ref, wait
            )
            await asyncio.sleep(max(0.0, wait))

    async def _consume(self, record: RunRecord, got: Stream) -> Outcome:
        """Read the shim's events: each ``output`` line into the run's log (one write per chunk
        received), the ``outcome`` last. RunLost when the stream ends without one."""
        pending: list[str] = []

        async def flush() -> None:
            while pending:
                batch = pending[:_BATCH]
                del pending[:_BATCH]
                await self._store.append_output(record.invocation_id, batch)

        async def chunks() -> AsyncIterator[bytes]:
            # Asked for the next chunk only once every event of this one was read: the moment to write.
            async for chunk in got.chunks:
                yield chunk
                await flush()

        source = chunks()
        response = httpx.Response(got.status, headers=got.headers, content=source)
        outcome: Outcome | None = None
        try:
            async with contextlib.aclosing(EventSource(response).aiter_sse()) as events:
                async for event in events:
                    if event.event == OUTPUT:
                        pending.append(event.data)
                    elif event.event == OUTCOME:
                        try:
                            outcome = Outcome.parse(event.data)
                        except ValueError:
                            raise RunLost("the shim sent an outcome that is not one") from None
                        break
            await flush()
        finally:
            await response.aclose()
            await source.aclose()  # type: ignore[attr-defined]
        if outcome is None:
            raise RunLost("the stream ended without an outcome")
        return outcome

    # -- ends ------------------------------------------------------------------------------
    async def _end(self, record: RunRecord, outcome: Outcome) -> tuple[RunRecord, Result | None, bool]:
        """Store the outcome as the run's end: the final record, its result, and whether this
        call ended it (False: it had ended already, e.g. cancelled a moment before)."""
        record = await self._store.get(record.invocation_id) or record  # with its started_at
        now = self._clock()
        usage = await self._read_usage(record.invocation_id)
        error_type = outcome.error.get("type") if outcome.error else None
        content_type = outcome.content_type or ("application/json" if outcome.error else "application/octet-stream")
        body = outcome.body
        if body is None:  # a shim that did not send the buffered answer: its error, or nothing
            body = json.dumps({"error": outcome.error}).encode() if outcome.error else b""
        final = record.replace(
            status=outcome_status(outcome.status, error_type if isinstance(error_type, str) else None),
            finished_at=now,
            expires_at=now + self._retention,
            http_status=outcome.status,
            exit_code=outcome.exit_code,
            content_type=content_type,
            error=outcome.error,
            usage=usage,
        )
        result = Result(outcome.status, content_type, body)
        if not await self._store.finish(final, result):
            return (await self._store.get(record.invocation_id) or final), None, False
        self._ended(final)
        return final, result, True

    async def _read_usage(self, invocation_id: str) -> Usage | None:
        if self._usage is None:
            return None
        try:
            return await self._usage(invocation_id)
        except Exception:
            log.exception("invocation %s: its model usage could not be read", invocation_id)
            return None

    def _ended(self, record: RunRecord) -> None:
        if self._on_end is not None:
            try:
                self._on_end(record)
            except Exception:
                log.exception("invocation %s: on_end failed", record.invocation_id)

    async def notify(self, record: RunRecord, result: Result | None = None) -> RunRecord:
        """Send the callback of a final run (its stored result when ``result`` is not given)."""
        if self._callbacks is None or record.callback is None:
            return record
        if result is None and record.status is not Status.CANCELLED:
            result = await self._store.result(record.invocation_id)
        return await self._callbacks.deliver(record, result)

    async def cancel(self, invocation_id: str) -> RunRecord | None:
        """Mark the run cancelled unless it ended first; the run as stored after (check its
        status: ``cancelled``, or the state it ended in), None when there is none. The runner
        running it leaves its stream at its next look; the callback is :meth:`notify`'s."""
        for _ in range(5):  # a run that moved from queued to running meanwhile is tried again
            record = await self._store.get(invocation_id)
            if record is None or record.final:
                return record
            now = self._clock()
            cancelled = record.replace(
                status=Status.CANCELLED,
                finished_at=now,
                expires_at=now + self._retention,
                error={"type": "cancelled", "message": "cancelled by DELETE /invocations/<id>"},
            )
            if await self._store.transition(invocation_id, frozenset({record.status}), cancelled):
                self._ended(cancelled)
                return cancelled
        return await self._store.get(invocation_id)

    async def release(self, record: RunRecord) -> bool:
        """Put a claimed run that never reached its agent (no ``started_at``) back in the queue,
        as if never claimed (a stop cut its wait for a sandbox); whether it was put back."""
        if record.status is not Status.RUNNING or record.started_at is not None:
            return False
        queued = record.replace(status=Status.QUEUED, attempts=max(0, record.attempts - 1))
        return await self._store.transition(record.invocation_id, frozenset({Status.RUNNING}), queued)

    async def interrupt(self, record: RunRecord, message: str) -> tuple[RunRecord, bool]:
        """End a run its runner lost to a stop: failed, error ``interrupted``, and its result
        that error as a synchronous call would have had it (502). Whether this call ended it."""
        outcome = _failure(record, 502, INTERRUPTED, message)
        ended, _, written = await self._end(record, outcome)
        return ended, written


def _is_events(got: Stream) -> bool:
    content_type = {k.lower(): v for k, v in got.headers.items()}.get("content-type", "")
    return got.status == 200 and content_type.split(";")[0].strip().lower() == EVENT_STREAM


async def _read(chunks: AsyncIterator[bytes]) -> bytes:
    out = bytearray()
    async for chunk in chunks:
        out += chunk[: _MAX_REFUSAL - len(out)]
        if len(out) >= _MAX_REFUSAL:
            break
    return bytes(out)


def _retry_after(headers: dict[str, str]) -> float:
    value = {k.lower(): v for k, v in headers.items()}.get("retry-after", "")
    seconds = decimal(value.strip(), 4) if value else None
    return float(min(max(seconds or 1, 1), 30))


def _failure(record: RunRecord, status: int, kind: str, message: str) -> Outcome:
    """An outcome the platform makes itself: its JSON error as a synchronous call's body."""
    body = error_body(kind, message, record.invocation_id)
    error = json.loads(body)["error"]
    return Outcome(record.invocation_id, status, None, "application/json", error, body)


def _deadline(record: RunRecord) -> Outcome:
    return _failure(
        record, 504, "deadline_exceeded", f"agent {record.agent} gave no answer within {record.timeout_s:g}s"
    )


def _refusal(record: RunRecord, got: Stream, body: bytes) -> Outcome:
    """A shim's answer that is not a stream (401, 400 …): the run's result as it came."""
    headers = {k.lower(): v for k, v in got.headers.items()}
    error: dict[str, object] | None = None
    with contextlib.suppress(ValueError, TypeError, KeyError):
        parsed = json.loads(body)["error"]
        if isinstance(parsed, dict):
            error = parsed
    if error is None and not 200 <= got.status < 300:
        error = {"type": "agent_error", "message": f"the shim answered HTTP {got.status}"}
    return Outcome(record.invocation_id, got.status, None, headers.get("content-type"), error, body)
