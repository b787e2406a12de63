"""A fake Anthropic Messages API: a real TLS server on 127.0.0.1, port 0, for tests and benches.

It speaks HTTP/1.1 (h11), serves ``api.anthropic.com`` with a leaf of :mod:`tests.support.tlsca`,
records every request, and answers ``POST /v1/messages`` the way the Claude CLI expects (the
shapes of Anthropic's Messages API and its "Streaming Messages" documentation, as the pinned CLI
was seen calling them in tests/integration/egress/test_claude_cli.py): SSE when the body says
``"stream": true``, JSON otherwise, a ``tool_use`` block for the tool whose name contains
``StructuredOutput``. Behaviour is set by
mutating :attr:`FakeAnthropic.behaviour` between calls::

    async with FakeAnthropic(leaf) as fake:
        fake.behaviour.chunk_delay = 0.2
        ... connect to ("127.0.0.1", fake.port) with SNI api.anthropic.com ...
        assert fake.requests[-1].headers["x-api-key"] == "sk-real"
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import h11

from tests.support.tlsca import Leaf

__all__ = ["Behaviour", "FakeAnthropic", "RecordedRequest"]


@dataclass
class RecordedRequest:
    method: str
    target: str
    headers: dict[str, str]
    """Lower-cased names; repeated headers joined with ``, ``."""
    body: bytes

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Behaviour:
    """How the fake answers the next Messages calls; tests mutate it."""

    structured_output: Callable[[dict[str, Any]], Any] | Any = field(default_factory=lambda: {"ok": True})
    """The StructuredOutput tool's input: a value, or a callable mapping the request body to it."""
    text: str = "Hello from the fake."
    model: str | None = None
    """Model named in the answer; defaults to the request's."""
    input_tokens: int = 11
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    output_tokens: int = 7
    message_deltas: int = 1
    """How many ``message_delta`` events (cumulative output_tokens, the last one is the total)."""
    status: int | None = None
    """Answer every Messages call with this error status (401, 429, 529 …) instead."""
    error_after_200: bool = False
    """Send ``event: error`` (overloaded) after the message_start of a 200 stream."""
    reset_after_events: int | None = None
    """Abort the connection after this many SSE events."""
    chunk_delay: float = 0.0
    """Seconds to wait between SSE events (each event is flushed on its own)."""
    stamp_events: bool = False
    """Prefix each SSE event with a comment ``: t=<time.perf_counter()>`` (benches measure the
    forwarding delay per chunk; the clock is shared by processes on one host)."""


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _error_body(status: int, message: str) -> bytes:
    kind = _ERROR_TYPES.get(status, "api_error")
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class FakeAnthropic:
    """The server. Use as an async context manager, or call :meth:`start` / :meth:`stop`."""

    def __init__(self, leaf: Leaf, host: str = "127.0.0.1", port: int = 0) -> None:
        self._leaf = leaf
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._message_seq = 0
        self.behaviour = Behaviour()
        self.requests: list[RecordedRequest] = []
        self.port = 0

    async def start(self) -> FakeAnthropic:
        ctx = self._leaf.server_context()
        ctx.set_alpn_protocols(["http/1.1"])
        self._server = await asyncio.start_server(self._accept, self._host, self._port, ssl=ctx)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FakeAnthropic:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def address(self) -> str:
        return f"{self._host}:{self.port}"

    def messages_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/v1/messages"]

    # -- connection handling ------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, ssl.SSLError, h11.ProtocolError, asyncio.IncompleteReadError):
            pass
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            request: h11.Request | None = None
            body = bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    if not data and conn.their_state is not h11.DONE:
                        return
                    continue
                if isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return
            assert request is not None
            headers: dict[str, str] = {}
            for name, value in request.headers:
                key = name.decode().lower()
                headers[key] = f"{headers[key]}, {value.decode()}" if key in headers else value.decode()
            recorded = RecordedRequest(request.method.decode(), request.target.decode(), headers, bytes(body))
            self.requests.append(recorded)
            keep = await self._answer(conn, writer, recorded)
            if not keep or conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()

    @staticmethod
    async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, *events: Any) -> None:
        for event in events:
            data = conn.send(event)
            if data:
                writer.write(data)
        await writer.drain()

    async def _json(self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
        headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
        if status == 429:
            headers.append(("retry-after", "1"))
        await self._send(
            conn,
            writer,
            h11.Response(status_code=status, headers=headers),
            h11.Data(data=body),
            h11.EndOfMessage(),
        )

    async def _answer(self, conn: h11.Connection, writer: asyncio.StreamWriter, req: RecordedRequest) -> bool:
        if req.method != "POST" or req.path != "/v1/messages":
            await self._json(conn, writer, 404, _error_body(404, f"no route {req.method} {req.path}"))
            return True
        b = self.behaviour
        if b.status is not None:
            await self._json(conn, writer, b.status, _error_body(b.status, "fake failure"))
            return True
        try:
            payload = req.json()
        except ValueError:
            await self._json(conn, writer, 400, _error_body(400, "body is not JSON"))
            return True
        message = self._message(payload)
        if not payload.get("stream"):
            await self._json(conn, writer, 200, json.dumps(message).encode())
            return True
        return await self._stream(conn, writer, message)

    def _message(self, payload: dict[str, Any]) -> dict[str, Any]:
        b = self.behaviour
        self._message_seq += 1
        tool = next(
            (t.get("name") for t in payload.get("tools") or [] if "StructuredOutput" in str(t.get("name"))),
            None,
        )
        if tool is not None:
            value = b.structured_output(payload) if callable(b.structured_output) else b.structured_output
            content: dict[str, Any] = {
                "type": "tool_use",
                "id": f"toolu_fake{self._message_seq}",
                "name": tool,
                "input": value,
            }
            stop = "tool_use"
        else:
            content = {"type": "text", "text": b.text}
            stop = "end_turn"
        return {
            "id": f"msg_fake{self._message_seq:04d}",
            "type": "message",
            "role": "assistant",
            "model": b.model or payload.get("model", "claude-fake"),
            "content": [content],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": b.input_tokens,
                "cache_creation_input_tokens": b.cache_creation_input_tokens,
                "cache_read_input_tokens": b.cache_read_input_tokens,
                "output_tokens": b.output_tokens,
            },
        }

    def _events(self, message: dict[str, Any]) -> list[bytes]:
        b = self.behaviour
        start = dict(message, content=[], stop_reason=None, usage=dict(message["usage"], output_tokens=1))
        events = [_sse("message_start", {"type": "message_start", "message": start})]
        if b.error_after_200:
            events.append(
                _sse(
                    "error",
                    {
                        "type": "error",
                        "error": {"type": "overloaded_error", "message": "Overloaded"},
                    },
                )
            )
            return events
        block = message["content"][0]
        if block["type"] == "tool_use":
            first = dict(block, input={})
            text = json.dumps(block["input"])
            deltas = [{"type": "input_json_delta", "partial_json": text[i : i + 8]} for i in range(0, len(text), 8)]
        else:
            first = dict(block, text="")
            text = block["text"]
            deltas = [{"type": "text_delta", "text": text[i : i + 5]} for i in range(0, len(text), 5)]
        events.append(
            _sse(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": first},
            )
        )
        events.append(_sse("ping", {"type": "ping"}))
        events += [_sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d}) for d in deltas]
        events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
        n = max(1, b.message_deltas)
        for i in range(1, n + 1):
            events.append(
                _sse(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                        "usage": {"output_tokens": b.output_tokens * i // n},
                    },
                )
            )
        events.append(_sse("message_stop", {"type": "message_stop"}))
        return events

    async def _stream(self, conn: h11.Connection, writer: asyncio.StreamWriter, message: dict[str, Any]) -> bool:
        b = self.behaviour
        headers = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]
        await self._send(conn, writer, h11.Response(status_code=200, headers=headers))
        for i, chunk in enumerate(self._events(message)):
            if b.reset_after_events is not None and i >= b.reset_after_events:
                writer.transport.abort()
                return False
            if b.chunk_delay and i:
                await asyncio.sleep(b.chunk_delay)
            if b.stamp_events:
                chunk = f": t={time.perf_counter():.9f}\n".encode() + chunk
            await self._send(conn, writer, h11.Data(data=chunk))
        await self._send(conn, writer, h11.EndOfMessage())
        return True
