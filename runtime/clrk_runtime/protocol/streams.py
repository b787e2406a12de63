"""Streamed answers: how an agent's stdout travels as Server-Sent Events, and how to read them.

A synchronous ``POST /`` with ``Accept: text/event-stream`` (and ``GET /invocations/<id>/events``)
answers ``200`` with ``Content-Type: text/event-stream`` once the agent has a sandbox, then::

    : clrk 0193a4c2-…                   a comment at once, so every hop sends the head now

    event: output                       one event per line of stdout, as the agent writes it
    id: 1
    data: {"step": 1}

    : keep-alive                        every HEARTBEAT_S seconds of silence (idle proxies)

    event: outcome                      last, always: what a buffered call would have answered
    id: 2
    data: {"invocationId": "…", "status": 200, "exitCode": 0, "contentType": "application/json"}

A line's ``data`` is its text (UTF-8, an invalid byte replaced), without its ``\\n`` (and the
``\\r`` of a CRLF ending); a lone ``\\r`` inside a line cannot travel in an SSE field, so the
line goes as several ``data:`` fields, which a reader joins with ``\\n``. A line longer than
:data:`LINE_LIMIT` bytes goes in pieces of that size; the last, unterminated line goes before
the outcome. Stderr never travels.

The outcome's ``status`` is the status a buffered call would have had (``502`` for a failed
agent, ``504`` at the deadline, ``502 response_too_large`` once stdout passed its cap: the lines
sent before stay sent), with ``error`` (the platform's error object) when it is not a success.
A refusal before the agent runs (400, 401, 503 …) is an ordinary JSON answer, never a stream.
Readers parse the stream with any SSE client (clrk's own use ``httpx-sse``).

``X-Clrk-Outcome-Body: base64`` on the request asks for the exact bytes a buffered call would
have answered, as ``body`` (base64) in the outcome: the ingress asks it when it runs an async
invocation, whose result must be that body exactly (lines alone lose what a line cannot carry).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "EVENT_STREAM",
    "HEARTBEAT",
    "HEARTBEAT_S",
    "LINE_LIMIT",
    "OUTCOME",
    "OUTCOME_BODY_HEADER",
    "OUTPUT",
    "STATUS",
    "STREAM_HEADERS",
    "Outcome",
    "OutputLines",
    "encode_event",
    "opening",
    "wants_stream",
]

EVENT_STREAM = "text/event-stream"
OUTPUT = "output"
"""One line of the agent's stdout."""
OUTCOME = "outcome"
"""The last event: :class:`Outcome` as JSON."""
STATUS = "status"
"""``GET /invocations/<id>/events`` only: the invocation's status document, first and at each change."""
HEARTBEAT = b": keep-alive\n\n"
HEARTBEAT_S = 15.0
"""Default seconds of silence before a heartbeat (proxies commonly cut idle streams at 30 to 60 s)."""
LINE_LIMIT = 64 * 1024
"""Bytes of one line sent as one event; a longer line goes in pieces."""
OUTCOME_BODY_HEADER = "X-Clrk-Outcome-Body"
STREAM_HEADERS = (
    ("Content-Type", f"{EVENT_STREAM}; charset=utf-8"),
    ("Cache-Control", "no-cache"),
    ("X-Accel-Buffering", "no"),
)
"""Headers of every streamed answer (``X-Accel-Buffering: no``: nginx-based ingresses pass each
event on at once)."""


def wants_stream(accept: str | None) -> bool:
    """Whether an ``Accept`` header asks for events (``text/event-stream`` among its ranges, with
    a non-zero ``q``)."""
    if not accept:
        return False
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if media.lower() != EVENT_STREAM:
            continue
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def opening(invocation_id: str) -> bytes:
    """The comment that opens a stream (it makes every hop send the answer's head at once)."""
    return f": clrk {invocation_id}\n\n".encode()


def encode_event(event: str, data: str, event_id: int | None = None) -> bytes:
    """One SSE event: ``data`` split into ``data:`` fields at ``\\n``, ``\\r\\n`` and ``\\r``."""
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines += [f"data: {part}" for part in data.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a streamed invocation ended: the ``outcome`` event's data."""

    invocation_id: str
    status: int
    exit_code: int | None = None
    content_type: str | None = None
    error: dict[str, object] | None = None
    """The platform's error object (``{"type", "message", …}``) when ``status`` is not a success."""
    body: bytes | None = None
    """The exact buffered answer, when the request asked for it (:data:`OUTCOME_BODY_HEADER`)."""

    def document(self) -> dict[str, object]:
        out: dict[str, object] = {"invocationId": self.invocation_id, "status": self.status}
        out["exitCode"] = self.exit_code
        if self.content_type is not None:
            out["contentType"] = self.content_type
        if self.error is not None:
            out["error"] = self.error
        if self.body is not None:
            out["body"] = base64.b64encode(self.body).decode("ascii")
        return out

    def encode(self, event_id: int | None = None) -> bytes:
        return encode_event(OUTCOME, json.dumps(self.document(), separators=(",", ":")), event_id)

    @classmethod
    def parse(cls, data: str) -> Outcome:
        """An ``outcome`` event's data; ValueError when it is not one."""
        document = json.loads(data)
        if not isinstance(document, dict) or not isinstance(document.get("status"), int):
            raise ValueError("an outcome event needs a JSON object with an integer status")
        body = document.get("body")
        error = document.get("error")
        return cls(
            invocation_id=str(document.get("invocationId", "")),
            status=document["status"],
            exit_code=document.get("exitCode") if isinstance(document.get("exitCode"), int) else None,
            content_type=document.get("contentType") if isinstance(document.get("contentType"), str) else None,
            error=error if isinstance(error, dict) else None,
            body=base64.b64decode(body, validate=True) if isinstance(body, str) else None,
        )


class OutputLines:
    """Cuts stdout chunks into the ``output`` events' texts: whole lines as they complete, a line
    over :data:`LINE_LIMIT` bytes in pieces, and what is left at :meth:`end`."""

    def __init__(self, limit: int = LINE_LIMIT) -> None:
        self._limit = limit
        self._partial = b""

    def feed(self, chunk: bytes) -> Iterator[str]:
        data = self._partial + chunk
        start = 0
        while True:
            newline = data.find(b"\n", start, start + self._limit + 1)
            if newline >= 0:
                yield _text(data[start:newline])
                start = newline + 1
            elif len(data) - start > self._limit:
                yield _text(data[start : start + self._limit])
                start += self._limit
            else:
                break
        self._partial = data[start:]

    def end(self) -> Iterator[str]:
        if self._partial:
            yield _text(self._partial)
            self._partial = b""


def _text(line: bytes) -> str:
    if line.endswith(b"\r"):
        line = line[:-1]
    return line.decode("utf-8", "replace")
