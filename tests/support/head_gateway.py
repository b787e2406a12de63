"""A stand-in egress gateway that records the head of every request it is sent.

What the shim's identity relay (``clrk_runtime.sandbox.identities``) sends on is what matters
about it: whose credentials each connection carries. :func:`head_gateway` is an asyncio TCP server
on ``127.0.0.1:0`` that reads each connection's request head and keeps it, then answers as a
proxy would, just enough for ``curl`` and raw sockets:

- ``CONNECT host:port``: ``HTTP/1.1 200 Connection established``, then, inside the tunnel, one
  HTTP request answered ``200`` with that request's head as the body (an echo through the tunnel);
- anything else (``GET http://…``): ``200`` with the body ``plain\\n``, and the connection closed.

Every connection accepted is counted, even one that sends nothing: "nothing reached the
gateway" is ``gateway.accepted == 0``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

__all__ = ["HeadGateway", "credentials", "head_gateway", "header_values"]


@dataclass
class HeadGateway:
    port: int
    heads: list[bytes] = field(default_factory=list)
    """Each request head received (up to its blank line), in the order they came."""
    accepted: int = 0
    """Connections accepted, whatever they sent."""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    """Set at each head received (clear it to wait for the next)."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def next_head(self, within: float = 10) -> bytes:
        """The next head to arrive from now on."""
        count = len(self.heads)
        async with asyncio.timeout(within):
            while len(self.heads) == count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.heads[count]


def header_values(head: bytes, name: str) -> list[str]:
    """The values of header ``name`` (any case) in ``head``."""
    wanted = name.lower().encode()
    values = []
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == wanted:
            values.append(value.strip().decode("latin-1"))
    return values


def credentials(head: bytes) -> list[tuple[str, str]]:
    """``(user, password)`` of each ``Proxy-Authorization: Basic`` header in ``head``."""
    found = []
    for value in header_values(head, "proxy-authorization"):
        scheme, _, encoded = value.partition(" ")
        assert scheme.lower() == "basic", value
        user, _, password = base64.b64decode(encoded).decode().partition(":")
        found.append((user, password))
    return found


def _answer(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body


@asynccontextmanager
async def head_gateway() -> AsyncIterator[HeadGateway]:
    """The gateway (see the module docstring), closed with every connection on exit."""
    gateway = HeadGateway(0)
    writers: set[asyncio.StreamWriter] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        gateway.accepted += 1
        writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            gateway.heads.append(head)
            gateway.arrived.set()
            if head.split(b" ", 1)[0].upper() != b"CONNECT":
                writer.write(_answer(b"plain\n"))
                return
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            inner = await reader.readuntil(b"\r\n\r\n")
            writer.write(_answer(inner))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writers.discard(writer)
            with contextlib.suppress(OSError):
                writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    gateway.port = server.sockets[0].getsockname()[1]
    try:
        yield gateway
    finally:
        server.close()
        for writer in list(writers):
            writer.transport.abort()
        await server.wait_closed()
