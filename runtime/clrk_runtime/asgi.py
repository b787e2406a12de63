"""The shim's HTTP face: a small ASGI app over one :class:`AgentRuntime`.

``POST`` (any path) invokes the agent. Knative's probes: ``GET /healthz`` (or ``/livez``) answers
200 while the process serves; ``GET /readyz`` answers 200 only once the warm pool is filled, and 503 again when
draining. With ``lifespan=True`` the app starts and stops (drains) the runtime with the server.

The same runtime also serves as a functions-framework function (:mod:`clrk_runtime.function`);
this app is what ``clrk-shim`` serves, leaner on the hot path (see ``hack/bench_shim.py``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from uuid6 import uuid7

from clrk_runtime.outcomes import Response, error_response
from clrk_runtime.runtime import AgentRuntime, request_too_large

__all__ = ["ShimApp"]

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
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            try:
                response = await self._http(scope, receive)
            except Exception:
                # A bug of ours, not the agent's: still the platform's error shape and an id.
                _log.exception("unexpected error while serving %s", scope.get("path"))
                invocation_id = str(uuid7())
                response = error_response(500, "internal", "the shim failed; see its log", invocation_id)
            await _send(send, response)

    async def _http(self, scope: Scope, receive: Receive) -> Response:
        method, path = scope["method"], scope["path"]
        if method in ("GET", "HEAD") and path in _PROBES:
            ready = path != "/readyz" or self.runtime.ready
            body = json.dumps({"ready": self.runtime.ready}).encode()
            return Response(200 if ready else 503, body, [("Content-Type", "application/json")])
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if method != "POST":
            invocation_id = headers.get("x-clrk-invocation-id") or str(uuid7())
            return error_response(405, "method_not_allowed", "invoke the agent with POST", invocation_id)
        try:
            body = await _read_body(receive, self.runtime.settings.stdin_cap, headers)
        except _TooLarge:
            invocation_id = headers.get("x-clrk-invocation-id") or str(uuid7())
            return request_too_large(invocation_id, self.runtime.settings.stdin_cap)
        return await self.runtime.handle(headers, body)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            kind = message["type"]
            try:
                if kind == "lifespan.startup" and self.lifespan:
                    await self.runtime.start()
                elif kind == "lifespan.shutdown" and self.lifespan:
                    await self.runtime.stop()
            except Exception as exc:
                await send({"type": f"{kind}.failed", "message": str(exc)})
                raise
            await send({"type": f"{kind}.complete"})
            if kind == "lifespan.shutdown":
                return


async def _read_body(receive: Receive, cap: int, headers: dict[str, str]) -> bytes:
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
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
