"""A synchronous streamed answer (:mod:`clrk_runtime.protocol.streams`) passed from the shim to its
caller as it comes, always ending with an ``outcome`` event.

The ingress passes the shim's bytes on unchanged, whole events at a time: a chunk that ends inside
an event holds that event's head back until its end arrives (an SSE reader could not use it
sooner), so an event of the ingress's own never lands in the middle of one of the shim's. It reads
the events with httpx-sse's decoder on the way, for the outcome's status (the span's and the
requests pane's) and the last event id. When the shim's stream breaks before its outcome, the
ingress ends it with an outcome of its own, of the types a buffered call would have had:

========================================  ======  =====================
the shim gone, the connection broken      502     ``agent_unavailable``
no event within the call's deadline       504     ``deadline_exceeded``
the stream ended without an outcome       502     ``agent_unavailable``
========================================  ======  =====================

A client that leaves ends the relay, which leaves the forwarder's stream: the shim hears its caller
gone and kills the agent's tree. Anything the shim sends after its outcome is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping

import httpx
from httpx_sse._decoders import SSEDecoder, SSELineDecoder
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from clrk_runtime.protocol.errors import error_document
from clrk_runtime.protocol.streams import OUTCOME, Outcome

__all__ = ["EventRelay", "RelayResponse"]

log = logging.getLogger("clrk.ingress")
_ENDS = (b"\n\n", b"\r\n\r\n")
"""How an event (or a comment) ends in the shim's stream (it writes ``\\n`` line ends)."""
_AFTER_OUTCOME_S = 1.0
"""Longest wait for the end of a shim's answer once its outcome came."""


class EventRelay:
    """The bytes a caller gets of one shim stream: ``chunks`` until the shim's outcome, or the
    ingress's own outcome when the stream broke first. ``deadline``: loop time past which the call
    is cut (504); ``timeout``: the agent's deadline in seconds, for the message."""

    def __init__(self, chunks: AsyncIterator[bytes], invocation_id: str, agent: str, deadline: float, timeout: float):
        self._chunks = chunks
        self._invocation_id = invocation_id
        self._agent = agent
        self._deadline = deadline
        self._timeout = timeout
        self.outcome_status: int | None = None
        """The outcome's status, once it went (the shim's or the ingress's)."""

    async def events(self) -> AsyncGenerator[bytes, None]:
        held = b""
        lines, decoder = SSELineDecoder(), SSEDecoder()
        last_id = 0
        try:
            while (chunk := await self._next()) is not None:
                held += chunk
                cut = max(held.rfind(end) + len(end) if end in held else 0 for end in _ENDS)
                if not cut:
                    continue
                frame, held = held[:cut], held[cut:]
                for line in lines.decode(frame.decode("utf-8", "replace")):
                    event = decoder.decode(line)
                    if event is None:
                        continue
                    if event.id.isdigit():
                        last_id = int(event.id)
                    if event.event == OUTCOME:
                        self.outcome_status = _status(event.data)
                yield frame
                if self.outcome_status is not None:
                    await self._finish()
                    return
            failure = (502, "agent_unavailable", f"agent {self._agent}'s stream ended without an outcome")
        except (TimeoutError, httpx.TimeoutException):
            failure = (504, "deadline_exceeded", f"agent {self._agent} gave no outcome within {self._timeout:g}s")
        except httpx.TransportError as exc:
            failure = (502, "agent_unavailable", f"agent {self._agent} stopped answering: {type(exc).__name__}")
        status, kind, message = failure
        error = error_document(kind, message, self._invocation_id)["error"]
        assert isinstance(error, dict)
        self.outcome_status = status
        yield Outcome(self._invocation_id, status, error=error).encode(last_id + 1)

    async def _finish(self) -> None:
        """Read what follows the outcome (normally nothing but the answer's end), for a moment at
        most, so that the shim's answer completes and its connection can serve again."""
        try:
            async with asyncio.timeout(_AFTER_OUTCOME_S):
                while await anext(self._chunks, None) is not None:
                    pass
        except (TimeoutError, httpx.HTTPError):
            pass  # leaving closes the connection instead

    async def _next(self) -> bytes | None:
        remaining = self._deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise TimeoutError
        async with asyncio.timeout(remaining):
            return await anext(self._chunks, None)


def _status(data: str) -> int:
    try:
        return Outcome.parse(data).status
    except ValueError:
        log.warning("a shim sent an outcome event that is not one: %.200r", data)
        return 502


class RelayResponse(StreamingResponse):
    """An :class:`EventRelay` as the answer. Unlike Starlette's own, it watches for the client
    leaving with plain asyncio (one cancellation of the relay, whose cleanup then runs to its
    end), and whatever happens it calls ``close`` (leaving the forwarder's stream) and then
    ``finished`` with the outcome's status (None when none went)."""

    def __init__(
        self,
        relay: EventRelay,
        headers: Mapping[str, str],
        close: Callable[[], Awaitable[object]],
        finished: Callable[[int | None], None] | None = None,
    ) -> None:
        self._events = relay.events()
        super().__init__(self._events, headers=headers)
        self.relay = relay
        self._close = close
        self.finished = finished

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            streaming = asyncio.create_task(self.stream_response(send))
            watching = asyncio.create_task(self.listen_for_disconnect(receive))
            try:
                await asyncio.wait({streaming, watching}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                streaming.cancel()  # no-op once it ended; else the client left (or we were cancelled)
                watching.cancel()
                await asyncio.wait({streaming, watching})
            if not streaming.cancelled() and (failure := streaming.exception()) is not None:
                raise failure
        finally:
            try:
                await self._events.aclose()
                await self._close()
            finally:
                if self.finished is not None:
                    self.finished(self.relay.outcome_status)
