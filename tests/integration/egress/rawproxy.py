"""Speak to the gateway below httpx: a raw CONNECT or plain request, to read 407/403 as sent."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from dataclasses import dataclass
from typing import Any


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def send(port: int, head: str) -> RawResponse:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        lines = raw.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(reader.readexactly(length), 5) if length else b""
        return RawResponse(status, headers, body)
    finally:
        writer.close()


async def connect(port: int, target: str, auth: str | None = None) -> RawResponse:
    extra = f"Proxy-Authorization: {auth}\r\n" if auth else ""
    return await send(port, f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n")


async def plain_get(port: int, url: str, host: str, auth: str | None = None) -> RawResponse:
    extra = f"Proxy-Authorization: {auth}\r\n" if auth else ""
    return await send(port, f"GET {url} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n")


async def _read_response(reader: asyncio.StreamReader) -> RawResponse:
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = raw.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), 5) if length else b""
    return RawResponse(int(lines[0].split()[1]), headers, body)


async def in_tunnel(port: int, target: str, auth: str, *, sni: str, cafile: str, request: bytes) -> RawResponse:
    """CONNECT ``target``, speak TLS inside with SNI ``sni`` (trusting ``cafile``), send ``request``
    as raw bytes and read one response: what an agent's own TLS client can do with a tunnel."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {auth}\r\n\r\n".encode())
        await writer.drain()
        established = await _read_response(reader)
        if established.status != 200:
            return established
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.set_alpn_protocols(["http/1.1"])
        await writer.start_tls(ctx, server_hostname=sni)
        writer.write(request)
        await writer.drain()
        return await _read_response(reader)
    finally:
        writer.close()
