"""What the ingress keeps of an async invocation, and the store it keeps it in.

One :class:`RunRecord` per accepted invocation: who asked (the caller, so that another caller's
id is a 404), what to run (the envelope, exactly as the shim will read it), where it stands
(:class:`~clrk_runtime.protocol.invocations.Status`), and, once it ended, its answer (the body and
content type a synchronous call would have had), kept until ``expires_at``.

Two stores behind one :class:`RunStore` protocol: :class:`~clrk.ingress.run_files.FileRunStore`
(SQLite under ``clrk dev``'s state directory: one process) and
:class:`~clrk.ingress.redis_runs.RedisRunStore` (Redis, shared by every ingress replica in a
cluster). Both pass the same contract tests (``tests/integration/ingress/test_run_stores.py``).

Events: while a run goes, each stdout line is appended to the run's event log
(:meth:`RunStore.append_output`) and any reader may follow it from the first line
(:meth:`RunStore.follow`). The log is kept as long as the record (the stdout cap bounds it), so a
reader that comes late, or after the end, still gets every line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Protocol

from clrk_runtime.protocol.durations import rfc3339
from clrk_runtime.protocol.invocations import Status, invocation_path

__all__ = ["CallbackState", "Result", "RunRecord", "RunStore", "Usage"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Model tokens the egress gateway counted for the invocation."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    model_calls: int = 0

    def document(self) -> dict[str, int]:
        return {
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "cacheCreationInputTokens": self.cache_creation_input_tokens,
            "cacheReadInputTokens": self.cache_read_input_tokens,
            "modelCalls": self.model_calls,
        }


@dataclass(frozen=True, slots=True)
class CallbackState:
    """Where the callback for a finished run stands."""

    url: str
    state: str = "pending"
    """``pending`` (not sent yet, or retrying), ``delivered``, ``failed`` (every attempt failed)."""
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: float | None = None

    def document(self) -> dict[str, object]:
        return {
            "url": self.url,
            "state": self.state,
            "attempts": self.attempts,
            "lastStatus": self.last_status,
            "lastError": self.last_error,
            "deliveredAt": None if self.delivered_at is None else rfc3339(self.delivered_at),
        }


@dataclass(frozen=True, slots=True)
class Result:
    """The answer a synchronous call would have had."""

    http_status: int
    content_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One async invocation (immutable: a store writes a new one with :meth:`replace`)."""

    invocation_id: str
    agent: str
    """``namespace/name``."""
    caller: str | None
    """The Caller that asked (None in open mode): only it may see the run."""
    envelope: bytes
    """The structured CloudEvent the agent will read on stdin."""
    timeout_s: float
    created_at: float
    status: Status = Status.QUEUED
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    """When the result (and the record) may be dropped; set when it ends (by the store, at its
    retention past ``finished_at``, when the writer left it None)."""
    result_expired: bool = False
    """The result was dropped before the record (the stores' size cap): ``…/result`` answers 410
    ``result_expired``. The store sets it; what a writer passes is ignored."""
    http_status: int | None = None
    exit_code: int | None = None
    content_type: str | None = None
    error: dict[str, object] | None = None
    """The platform's error object when it did not succeed (``interrupted``: cut by a restart)."""
    usage: Usage | None = None
    callback: CallbackState | None = None
    attempts: int = 0
    """How many times it was started (more than 1: its first runner was lost and it ran again)."""
    traceparent: str | None = None
    """The accepting request's trace context, so the run's spans join the caller's trace."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Store-specific bookkeeping (e.g. a Redis lease); never shown."""

    def replace(self, **changes: Any) -> RunRecord:
        return dataclasses.replace(self, **changes)

    @property
    def final(self) -> bool:
        return self.status in (Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT, Status.CANCELLED)

    def document(self) -> dict[str, object]:
        """The status document ``GET /invocations/<id>`` answers (see
        :mod:`clrk_runtime.protocol.invocations`)."""

        def at(moment: float | None) -> str | None:
            return None if moment is None else rfc3339(moment)

        return {
            "invocationId": self.invocation_id,
            "agent": self.agent,
            "status": str(self.status),
            "createdAt": at(self.created_at),
            "startedAt": at(self.started_at),
            "finishedAt": at(self.finished_at),
            "expiresAt": at(self.expires_at),
            "timeoutSeconds": self.timeout_s,
            "httpStatus": self.http_status,
            "exitCode": self.exit_code,
            "contentType": self.content_type,
            "error": self.error,
            "usage": None if self.usage is None else self.usage.document(),
            "attempts": self.attempts,
            "callback": None if self.callback is None else self.callback.document(),
            "links": {
                "self": invocation_path(self.invocation_id),
                "result": invocation_path(self.invocation_id, "result"),
                "events": invocation_path(self.invocation_id, "events"),
            },
        }


class RunStore(Protocol):
    """Where async invocations live. Every method is a coroutine and safe to call concurrently;
    none blocks the event loop (a file-backed store does its I/O in a thread)."""

    async def create(self, record: RunRecord) -> None:
        """Keep a new run (its id is new: the ingress minted it)."""
        ...

    async def get(self, invocation_id: str) -> RunRecord | None:
        """The run, or None when there is none (never was, or expired and dropped)."""
        ...

    async def update(self, record: RunRecord) -> None:
        """Write ``record`` over the stored one of its id (status, times, callback …). Never revives
        an ended run: over a final run only a record of the same status is written (a runner's
        late write after a cancel is dropped); an unknown (or dropped) id is left alone."""
        ...

    async def transition(self, invocation_id: str, expected: frozenset[Status], record: RunRecord) -> bool:
        """Write ``record`` only if the stored run's status is in ``expected`` (atomically: two
        ingress replicas racing to start, finish or cancel one run, one wins); True when written."""
        ...

    async def finish(self, record: RunRecord, result: Result) -> bool:
        """Store the final ``record`` with its ``result`` unless the run already ended (a cancel
        came first); True when written. Followers end once they gave every line."""
        ...

    async def result(self, invocation_id: str) -> Result | None:
        """The stored answer of a finished run (None before it ends, or once expired)."""
        ...

    async def append_output(self, invocation_id: str, lines: list[str]) -> None:
        """Add stdout lines to the run's event log (in order); dropped once the run ended."""
        ...

    def follow(self, invocation_id: str, after: int = 0) -> AsyncGenerator[tuple[int, str], None]:
        """``(number, line)`` for each output line past ``after`` (numbered from 1), then each new
        one as it is appended; ends once the run is final and every line was given, or the run is
        gone. An async generator: iterate it inside :func:`contextlib.aclosing`, so that a reader
        that stops early leaves nothing behind at once (a bare ``async for`` that breaks leaves it
        suspended until it is collected)."""
        ...

    async def unfinished(self) -> list[RunRecord]:
        """Runs not final (queued or running): what a restart must resume or mark cut."""
        ...

    async def expire(self, now: float) -> int:
        """Drop runs whose ``expires_at`` is before ``now`` (and results past the size cap, oldest
        finished first, marking their records :attr:`RunRecord.result_expired`); how many runs and
        results were dropped."""
        ...

    async def aclose(self) -> None: ...
