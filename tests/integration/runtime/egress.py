"""Stand-ins for the egress gateway: tiny asyncio TCP servers on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


@asynccontextmanager
async def line_server(answer: str = "pong") -> AsyncIterator[tuple[int, list[str]]]:
    """Answers each connection's first line with ``answer``; yields (port, lines received)."""
    received: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        if line:
            received.append(line.decode().strip())
            writer.write(f"{answer}\n".encode())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], received


@asynccontextmanager
async def barrier_server(parties: int) -> AsyncIterator[int]:
    """Holds each connection until ``parties`` have sent a line, then sends every line to all."""
    lines: list[str] = []
    everyone = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines.append((await reader.readline()).decode().strip())
        if len(lines) >= parties:
            everyone.set()
        await asyncio.wait_for(everyone.wait(), 20)
        writer.write((" ".join(lines) + "\n").encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


@asynccontextmanager
async def gate_server() -> AsyncIterator[tuple[int, asyncio.Event]]:
    """Holds every connection until the yielded event is set, then answers ``open``."""
    opened = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        await asyncio.wait_for(opened.wait(), 20)
        writer.write(b"open\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], opened
