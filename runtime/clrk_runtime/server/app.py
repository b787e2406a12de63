"""The shim's HTTP face: a small ASGI app over one :class:`AgentRuntime`.

``POST`` (any path) invokes the agent; with ``Accept: text/event-stream`` the answer streams the
agent's stdout as Server-Sent Events while it runs (:mod:`clrk_runtime.invocation.streaming`).
Once a request's body is read, the app watches its connection: a caller that disconnects before
its answer ends (``http.disconnect`` from ``receive``) gets its invocation cancelled, the agent's
whole tree killed and its sandbox removed. That is how a cancel reaches an agent in a cluster (the
ingress closes its connection and queue-proxy passes that on), and ``DELETE /invocations/<id>``
in ``clrk dev``. Knative's probes: ``GET /healthz`` (or ``/livez``) answers 200 while the process
serves (from the start: the warm pool fills in the background, warm-started agents may take a
while) and 503 if the pool could not be filled at all; ``GET /readyz`` answers 200 only once the
warm pool is filled, and 503 again when draining; its JSON also says how sandboxes are confined
(``sandbox``: the kind and, for plain ones, the Landlock ABI in use and the pieces it lacks, see
:class:`~clrk_runtime.service.runtime.SandboxReport`). With ``lifespan=True`` the app starts and
stops (drains) the runtime with the server.

This is what ``clrk-shim`` serves by default; ``clrk-shim --server functions-framework`` serves
the same runtime through functions-framework instead (:mod:`clrk_runtime.server.functions`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, MutableMapping
from typing import Any

from clrk_runtime.invocation.outcomes import Response, caller_gone, error_response, request_too_large
from clrk_runtime.invocation.streaming import StreamedAnswer
from clrk_runtime.protocol.headers import RepeatedHeader, decimal, request_headers
from clrk_runtime.protocol.ids import new_invocation_id
from clrk_runtime.protocol.streams import wants_stream
from clrk_runtime.service.runtime import AgentRuntime

__all__ = ["Message", "Receive", "Scope", "Send", "ShimApp", "run_lifespan", "unless_gone"]

_log = logging.getLogger(__name__)
_PROBES = ("/healthz", "/livez", "/readyz")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _TooLarge(Exception):
    pass


class ShimApp:
    def __init__(self, runtime: AgentRuntime, *, lifespan: bool = True) -> None:
        self.runtime = runtime
        self.lifespan = lifespan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await run_lifespan(self.runtime if self.lifespan else None, receive, send)
        elif scope["type"] == "http":
            answer = await self.answer(scope["method"], scope["path"], scope["headers"], receive)
            if isinstance(answer, StreamedAnswer):
                await _send_stream(send, receive, answer)
            else:
                await _send(send, answer)

    async def answer(
        self, method: str, path: str, raw_headers: Iterable[tuple[bytes, bytes]], receive: Receive
    ) -> Response | StreamedAnswer:
        """:meth:`respond`, but a ``POST`` whose ``Accept`` asks for events
        (:func:`~clrk_runtime.protocol.streams.wants_stream`) gets a :class:`StreamedAnswer` once
        its agent runs, which the caller sends while watching ``receive``, and closes
        (:meth:`StreamedAnswer.aclose`) whatever happens; never raises."""
        return await self._guarded(method, path, raw_headers, receive, streams=True)

    async def respond(
        self, method: str, path: str, raw_headers: Iterable[tuple[bytes, bytes]], receive: Receive
    ) -> Response:
        """The buffered answer to one request (``receive`` yields its body, then the caller's
        disconnect, which kills the invocation: the answer then is a 499 nobody reads); never
        raises."""
        answer = await self._guarded(method, path, raw_headers, receive, streams=False)
        assert isinstance(answer, Response)
        return answer

    async def _guarded(
        self, method: str, path: str, raw_headers: Iterable[tuple[bytes, bytes]], receive: Receive, *, streams: bool
    ) -> Response | StreamedAnswer:
        try:
            return await self._respond(method, path, raw_headers, receive, streams)
        except Exception:
            # A bug of ours, not the agent's: still the platform's error shape and an id.
            _log.exception("unexpected error while serving %s %s", method, path)
            return error_response(500, "internal", "the shim failed; see its log", new_invocation_id())

    async def _respond(
        self, method: str, path: str, raw_headers: Iterable[tuple[bytes, bytes]], receive: Receive, streams: bool
    ) -> Response | StreamedAnswer:
        if method in ("GET", "HEAD") and path in _PROBES:
            broken = self.runtime.broken
            ready = (path != "/readyz" or self.runtime.ready) and not broken
            details: dict[str, object] = {"ready": self.runtime.ready}
            if broken:
                details["error"] = broken
            report = self.runtime.sandbox_report
            if path == "/readyz" and report is not None:
                details["sandbox"] = report.details()  # what a plain sandbox lacks here, if anything
            body = json.dumps(details).encode()
            return Response(200 if ready else 503, body, [("Content-Type", "application/json")])
        if method != "POST":
            return error_response(405, "method_not_allowed", "invoke the agent with POST", new_invocation_id())
        try:
            headers = request_headers(raw_headers)  # the ingress's rule: a second ce-id is refused
        except RepeatedHeader as exc:
            return error_response(400, exc.kind, exc.message, new_invocation_id())
        try:
            body = await _read_body(receive, self.runtime.settings.stdin_cap, headers)
        except _TooLarge:
            return request_too_large(new_invocation_id(), self.runtime.settings.stdin_cap)
        if streams and wants_stream(headers.get("accept")):
            streamed = await unless_gone(receive, self.runtime.stream(headers, body))
            return caller_gone(new_invocation_id()) if streamed is None else streamed
        answered = await unless_gone(receive, self.runtime.handle(headers, body))
        return caller_gone(new_invocation_id()) if answered is None else answered


async def unless_gone[T](receive: Receive, work: Coroutine[Any, Any, T]) -> T | None:
    """``work``'s result, while watching ``receive`` (a request whose body was read) for the
    caller's disconnect: None once the caller went away first, ``work`` then cancelled and done
    with (an invocation it ran is killed, its sandbox removed). A server whose ``receive`` says
    something else than ``http.disconnect`` cannot tell: ``work`` then just runs to its end."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and watch.result():
            task.cancel()
            await asyncio.wait({task})
            if task.cancelled():
                return None
        return await task  # done, or this server cannot tell a disconnect
    finally:
        watch.cancel()
        if not task.done():  # we were cancelled ourselves: so is the work, and it ends first
            if not task.cancelling():
                task.cancel()
            await asyncio.wait({task})


async def _disconnected(receive: Receive) -> bool:
    """Whether the caller disconnected (what ``receive`` answers once the body was read)."""
    try:
        message = await receive()
    except Exception:
        return False
    return message.get("type") == "http.disconnect"


async def run_lifespan(runtime: AgentRuntime | None, receive: Receive, send: Send) -> None:
    """ASGI lifespan: start ``runtime`` with the server, drain and stop it at shutdown (None: neither)."""
    while True:
        message = await receive()
        kind = message["type"]
        try:
            if kind == "lifespan.startup" and runtime is not None:
                await runtime.start(wait=False)  # listening at once: /readyz says when the pool is full
            elif kind == "lifespan.shutdown" and runtime is not None:
                await runtime.stop()
        except Exception as exc:
            await send({"type": f"{kind}.failed", "message": str(exc)})
            raise
        await send({"type": f"{kind}.complete"})
        if kind == "lifespan.shutdown":
            return


async def _read_body(receive: Receive, cap: int, headers: dict[str, str]) -> bytes:
    declared = decimal(headers.get("content-length", ""), 18)
    if declared is not None and declared > cap:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _raw(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1", "replace")) for k, v in headers]


async def _send(send: Send, response: Response) -> None:
    headers = _raw(response.headers)
    headers.append((b"content-length", str(len(response.body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


async def _send_stream(send: Send, receive: Receive, answer: StreamedAnswer) -> None:
    """Send ``answer`` as its events come (chunked: no length), until the outcome or the caller's
    disconnect; the run is over, or cancelled, when this returns."""

    async def pump() -> None:
        await send({"type": "http.response.start", "status": answer.status, "headers": _raw(answer.headers)})
        async for data in answer:
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    try:
        await unless_gone(receive, pump())
    finally:
        await answer.aclose()
