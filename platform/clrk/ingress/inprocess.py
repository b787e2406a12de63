"""Calling an ASGI app in this process the way a client calls it over HTTP, its answer as it comes.

httpx's ``ASGITransport`` runs the app to its end before it gives the answer (useless for a
stream), ignores timeouts, and never tells the app its caller left. :func:`asgi_call` runs the
app in a task of its own and gives:

* the head as soon as the app sends ``http.response.start``;
* each ``http.response.body`` chunk as the app sends it, through a small bounded queue (an app
  that writes faster than its caller reads waits, as it would on a socket);
* ``{"type": "http.disconnect"}`` from the app's ``receive()`` once the answer is complete or the
  caller left (the context ended), as a server does. A caller leaving early gives the app
  :data:`GRACE_S` seconds to end on its own (the shim kills the agent's tree), then cancels it:
  the app's task never outlives the call.

Failures read as httpx's, so a forwarder's callers handle one set for both transports:
``httpx.ReadTimeout`` when the head or the next chunk did not come within ``wait``,
``httpx.RemoteProtocolError`` when the app ended (or raised) before its answer was complete. An
exception the app raises before its head propagates as it is, as with ``ASGITransport``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["GRACE_S", "AsgiAnswer", "asgi_call"]

GRACE_S = 10.0
"""Seconds an app whose caller left has to end on its own before it is cancelled."""
_QUEUE = 16
"""Chunks held between the app and its caller."""

Message = MutableMapping[str, Any]
App = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Any]

log = logging.getLogger("clrk.ingress")
_running: set[asyncio.Task[None]] = set()
"""Every app task still running: referenced until it ends, even one cancelled by a caller that was
itself cancelled while waiting for it."""


@dataclass(frozen=True, slots=True)
class AsgiAnswer:
    """The app's answer: its head at once, its body as it comes."""

    status: int
    headers: list[tuple[bytes, bytes]]
    chunks: AsyncIterator[bytes]


class _Ended:
    """The queue's last item: the answer ended, completely or not (``failure``)."""

    def __init__(self, failure: BaseException | None = None) -> None:
        self.failure = failure


class _Call:
    """One request to the app: its ``receive`` and ``send``, and the caller's side of both."""

    def __init__(self, app: App, scope: dict[str, Any], body: bytes, wait: float) -> None:
        self._app, self._scope, self._body, self._wait = app, scope, body, wait
        self._head: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]] = asyncio.get_running_loop().create_future()
        self._chunks: asyncio.Queue[bytes | _Ended] = asyncio.Queue(_QUEUE)
        self._body_given = False
        self._complete = False
        self._gone = False
        self._over = asyncio.Event()
        """Set once the answer is complete or the caller left: ``receive()`` then says disconnected."""
        self._ended = False
        self.task = asyncio.create_task(self._run(), name=f"asgi {scope['method']} {scope['path']}")
        _running.add(self.task)
        self.task.add_done_callback(_running.discard)

    async def receive(self) -> Message:
        if not self._body_given:
            self._body_given = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        await self._over.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self._gone:
            return  # as a server does once its client left: the app finds out from receive()
        kind = message["type"]
        if kind == "http.response.start":
            if self._head.done():
                raise RuntimeError("http.response.start sent twice")
            self._head.set_result(
                (int(message["status"]), [(bytes(k), bytes(v)) for k, v in message.get("headers", [])])
            )
        elif kind == "http.response.body":
            if not self._head.done() or self._complete:
                raise RuntimeError("http.response.body sent before http.response.start or after the last one")
            body = bytes(message.get("body", b""))
            if body:
                await self._chunks.put(body)
            if not message.get("more_body", False):
                self._complete = True
                self._over.set()
                await self._chunks.put(_Ended())

    async def _run(self) -> None:
        try:
            await self._app(self._scope, self.receive, self.send)
        except Exception as exc:
            if not self._head.done():
                self._head.set_exception(exc)
            elif not self._complete and not self._gone:
                log.warning("in-process %s failed in its answer", self._scope["path"], exc_info=True)
                failure = httpx.RemoteProtocolError("the app failed before its answer was complete")
                failure.__cause__ = exc
                await self._chunks.put(_Ended(failure))
            else:
                log.warning(
                    "in-process %s failed once its caller had its answer or left", self._scope["path"], exc_info=True
                )
            return
        if not self._head.done():
            self._head.set_exception(httpx.RemoteProtocolError("the app ended without answering"))
        elif not self._complete and not self._gone:
            await self._chunks.put(_Ended(httpx.RemoteProtocolError("the app ended before its answer was complete")))

    async def head(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        try:
            async with asyncio.timeout(self._wait):
                return await asyncio.shield(self._head)
        except TimeoutError:
            raise httpx.ReadTimeout(f"no answer within {self._wait:g}s") from None

    def __aiter__(self) -> _Call:
        return self

    async def __anext__(self) -> bytes:
        if self._ended:
            raise StopAsyncIteration
        try:
            async with asyncio.timeout(self._wait):
                item = await self._chunks.get()
        except TimeoutError:
            raise httpx.ReadTimeout(f"no chunk within {self._wait:g}s") from None
        if isinstance(item, bytes):
            return item
        self._ended = True
        if item.failure is not None:
            raise item.failure
        raise StopAsyncIteration

    async def close(self, grace: float) -> None:
        """The caller is done: the app hears it left (if its answer was not complete) and has
        ``grace`` seconds to end before it is cancelled."""
        self._gone = True
        self._over.set()
        while not self._chunks.empty():  # frees an app blocked on a full queue
            self._chunks.get_nowait()
        if self._head.done() and not self._head.cancelled():
            self._head.exception()  # retrieved: the caller may have left before it was raised
        if self.task.done():
            return
        try:
            await asyncio.wait({self.task}, timeout=grace)
        finally:
            if not self.task.done():
                log.warning("in-process %s did not end within %gs of its caller leaving", self._scope["path"], grace)
                self.task.cancel()
                await asyncio.wait({self.task})


@asynccontextmanager
async def asgi_call(
    app: App,
    method: str,
    path: str,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
    *,
    wait: float,
    grace: float = GRACE_S,
) -> AsyncIterator[AsgiAnswer]:
    """Call ``app`` with one request; the context gives the answer once its head is sent. ``wait``
    bounds the wait for the head and for each chunk. Leaving the context ends the call."""
    names = {name.lower() for name, _ in headers}
    sent = [(name.lower(), value) for name, value in headers]
    if b"host" not in names:
        sent.insert(0, (b"host", b"shim"))
    if b"content-length" not in names:
        sent.append((b"content-length", str(len(body)).encode("ascii")))
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("ascii"),
        "query_string": b"",
        "root_path": "",
        "headers": sent,
        "server": ("shim", 80),
        "client": ("127.0.0.1", 0),
    }
    call = _Call(app, scope, body, wait)
    try:
        status, response_headers = await call.head()
        yield AsgiAnswer(status, response_headers, call)
    finally:
        await call.close(grace)
