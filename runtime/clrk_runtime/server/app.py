"""The shim's HTTP face: a small ASGI app over one :class:`AgentRuntime`.

``POST`` (any path) invokes the agent. Knative's probes: ``GET /healthz`` (or ``/livez``) answers
200 while the process serves; ``GET /readyz`` answers 200 only once the warm pool is filled, and 503 again when
draining; its JSON also says how sandboxes are confined (``sandbox``: the kind and, for plain
ones, the Landlock ABI in use and the pieces it lacks, see
:class:`~clrk_runtime.service.runtime.SandboxReport`). With ``lifespan=True`` the app starts and
stops (drains) the runtime with the server.

This is what ``clrk-shim`` serves by default; ``clrk-shim --server functions-framework`` serves
the same runtime through functions-framework instead (:mod:`clrk_runtime.server.functions`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from clrk_runtime.invocation.outcomes import Response, error_response, request_too_large
from clrk_runtime.protocol.headers import RepeatedHeader, decimal, request_headers
from clrk_runtime.protocol.ids import new_invocation_id
from clrk_runtime.service.runtime import AgentRuntime

__all__ = ["Message", "Receive", "Scope", "Send", "ShimApp", "run_lifespan"]

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
            response = await self.respond(scope["method"], scope["path"], scope["headers"], receive)
            await _send(send, response)

    async def respond(
        self, method: str, path: str, raw_headers: Iterable[tuple[bytes, bytes]], receive: Receive
    ) -> Response:
        """The answer to one request (``receive`` yields its body); never raises."""
        try:
            return await self._respond(method, path, raw_headers, receive)
        except Exception:
            # A bug of ours, not the agent's: still the platform's error shape and an id.
            _log.exception("unexpected error while serving %s %s", method, path)
            return error_response(500, "internal", "the shim failed; see its log", new_invocation_id())

    async def _respond(
        self, method: str, path: str, raw_headers: Iterable[tuple[bytes, bytes]], receive: Receive
    ) -> Response:
        if method in ("GET", "HEAD") and path in _PROBES:
            ready = path != "/readyz" or self.runtime.ready
            details: dict[str, object] = {"ready": self.runtime.ready}
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
        return await self.runtime.handle(headers, body)


async def run_lifespan(runtime: AgentRuntime | None, receive: Receive, send: Send) -> None:
    """ASGI lifespan: start ``runtime`` with the server, drain and stop it at shutdown (None: neither)."""
    while True:
        message = await receive()
        kind = message["type"]
        try:
            if kind == "lifespan.startup" and runtime is not None:
                await runtime.start()
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


async def _send(send: Send, response: Response) -> None:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1", "replace")) for k, v in response.headers]
    headers.append((b"content-length", str(len(response.body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
