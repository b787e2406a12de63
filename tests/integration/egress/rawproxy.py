"""Speak to the gateway below httpx: a raw CONNECT or plain request, to read 407/403 as sent."""

from __future__ import annotations

import asyncio
import base64
import json
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
