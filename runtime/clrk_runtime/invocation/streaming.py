"""An invocation's answer as Server-Sent Events, while it runs (the wire format: :mod:`clrk_runtime.protocol.streams`).

Pure where it can be: :class:`EventWriter` turns stdout chunks into ``output`` events and the
run's buffered answer into the ``outcome`` event (:func:`outcome_of`), bytes in, bytes out. The
one piece of I/O is :class:`StreamedAnswer`: the running invocation (a task of its own) and the
events it has produced so far, read by whoever sends the answer::

    answer.status, answer.headers           200, the stream's headers and the invocation id
    async for data in answer: ...           the opening comment, output events, heartbeats, the outcome
    await answer.aclose()                   always: a run still going is cancelled (its caller left)

The run never waits for its reader. Chunks wait in a queue until the reader takes them, and that
queue is bounded by the stdout cap: the run hands over only the chunks within the cap, the very
bytes objects its buffered body keeps (no copy), so a slow reader costs at most the cap, never
more, and the sandbox is freed when the agent ends, however far behind the reader is. The
reader then gets the rest, then the outcome.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from clrk_runtime.invocation.outcomes import OVER_CAP, Response, error_response
from clrk_runtime.protocol.headers import EXIT_CODE_HEADER, INVOCATION_HEADER
from clrk_runtime.protocol.streams import HEARTBEAT, OUTPUT, STREAM_HEADERS, Outcome, OutputLines, encode_event, opening

__all__ = ["EventWriter", "OutputQueue", "StreamedAnswer", "outcome_of"]

_log = logging.getLogger(__name__)


def outcome_of(response: Response, invocation_id: str, *, with_body: bool = False) -> Outcome:
    """The ``outcome`` event for the answer a buffered call got: its status; the agent's exit
    code (when it exited by itself); the content type of the agent's own answer, or the error
    object of the platform's; and, ``with_body``, the answer's exact bytes."""
    code = response.header(EXIT_CODE_HEADER)
    return Outcome(
        invocation_id=invocation_id,
        status=response.status,
        exit_code=int(code) if code is not None else None,
        content_type=response.header("Content-Type") if response.error is None else None,
        error=response.error,
        body=response.body if with_body else None,
    )


class EventWriter:
    """The bytes of one stream: :meth:`opening`, :meth:`output` per stdout chunk (whole lines as
    they complete, event ids from 1), :meth:`outcome` last (the unterminated last line first)."""

    def __init__(self, invocation_id: str) -> None:
        self.invocation_id = invocation_id
        self._lines = OutputLines()
        self._last_id = 0

    def opening(self) -> bytes:
        return opening(self.invocation_id)

    def output(self, chunk: bytes) -> bytes:
        """The events of the lines ``chunk`` completes (``b""``: none yet)."""
        return b"".join(self._event(line) for line in self._lines.feed(chunk))

    def outcome(self, outcome: Outcome) -> bytes:
        """The unterminated last line, then the outcome event; past the stdout cap, the outcome
        alone (that line was cut by the cap, not ended by the agent)."""
        cut = outcome.error is not None and outcome.error.get("type") == OVER_CAP
        rest = b"".join(self._event(line) for line in self._lines.end() if not cut)
        self._last_id += 1
        return rest + outcome.encode(self._last_id)

    def _event(self, line: str) -> bytes:
        self._last_id += 1
        return encode_event(OUTPUT, line, self._last_id)


class OutputQueue:
    """Stdout chunks from a running invocation to the stream's reader: :meth:`put` is the run's
    output listener (never blocks, never refuses: see the module's docstring for its bound)."""

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._wake = asyncio.Event()

    def put(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._wake.set()

    def wake(self) -> None:
        """Let the reader look again (the run ended)."""
        self._wake.set()

    def take(self) -> list[bytes]:
        """Every chunk waiting, oldest first."""
        self._wake.clear()
        chunks = list(self._chunks)
        self._chunks.clear()
        return chunks

    async def wait(self, deadline: float) -> bool:
        """Wait for a chunk (or :meth:`wake`) until ``deadline`` (loop time); False if it passed."""
        try:
            async with asyncio.timeout_at(deadline):
                await self._wake.wait()
        except TimeoutError:
            return False
        return True


@dataclass(eq=False)
class StreamedAnswer:
    """The streamed answer of an invocation running in ``run`` (whose output listener is
    ``queue.put``): ``200`` with :data:`~clrk_runtime.protocol.streams.STREAM_HEADERS` and the
    invocation id, then the events as an async iterator (iterate once). Whoever sends it calls
    :meth:`aclose` at the end, whatever happened: a run still going then is cancelled."""

    invocation_id: str
    run: asyncio.Task[Response]
    queue: OutputQueue
    heartbeat: float
    """Seconds of silence before a heartbeat comment."""
    with_body: bool = False
    """Put the buffered answer's exact bytes in the outcome (``X-Clrk-Outcome-Body: base64``)."""

    def __post_init__(self) -> None:
        self.run.add_done_callback(lambda _: self.queue.wake())
        self._events = self._produce()

    @property
    def status(self) -> int:
        return 200

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [*STREAM_HEADERS, (INVOCATION_HEADER, self.invocation_id)]

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events

    async def aclose(self) -> None:
        """Cancel the run if it is still going (the agent's tree killed, its sandbox removed: this
        returns once that is done), and end the events."""
        if not self.run.done():
            self.run.cancel()
            await asyncio.wait({self.run})
        await self._events.aclose()

    async def _produce(self) -> AsyncGenerator[bytes]:
        loop = asyncio.get_running_loop()
        writer = EventWriter(self.invocation_id)
        yield writer.opening()
        sent = loop.time()
        while True:
            done = self.run.done()  # before taking: a chunk put before the end is never missed
            data = b"".join(writer.output(chunk) for chunk in self.queue.take())
            if data:
                yield data
                sent = loop.time()
            if done:
                break
            if not await self.queue.wait(sent + self.heartbeat):
                yield HEARTBEAT
                sent = loop.time()
        yield writer.outcome(outcome_of(self._response(), self.invocation_id, with_body=self.with_body))

    def _response(self) -> Response:
        try:
            return self.run.result()
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug of ours, not the agent's: the outcome still says so in the platform's shape.
            _log.exception("[%s] the invocation failed", self.invocation_id)
            return error_response(500, "internal", "the shim failed; see its log", self.invocation_id)
