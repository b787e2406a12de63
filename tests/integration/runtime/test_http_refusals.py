"""The real ``clrk-shim`` process refuses what HTTP cannot frame, and slow heads, in JSON.

``clrk_runtime.server.main`` serves with ``clrk_runtime.server.protocols``'s protocol class and
``CLRK_HEAD_TIMEOUT_SECONDS``; the protocol itself is tested in tests/unit/runtime/test_protocols.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from tests.support.runtime import SANDBOX_UID, SANDBOX_UIDS, shim_command

HEAD_TIMEOUT = 0.5
MARGIN = 2.0
EARLY = 0.01
"""uvloop's timers (libuv's) count whole milliseconds and may fire a fraction of one early."""
READ_LIMIT = 10.0


@asynccontextmanager
async def _running_shim(root: Path) -> AsyncIterator[int]:
    env = {
        "PATH": os.environ["PATH"],
        "CLRK_TEMP_ROOT": str(root),
        "CLRK_SANDBOX_UID": str(SANDBOX_UID),
        "CLRK_SANDBOX_UIDS": str(SANDBOX_UIDS),
        "CLRK_HEAD_TIMEOUT_SECONDS": str(HEAD_TIMEOUT),
    }
    shim = await asyncio.create_subprocess_exec(
        shim_command(), "--port", "0", "--host", "127.0.0.1", "--sandbox", "plain", "--", "cat",
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert shim.stderr is not None
    try:
        async with asyncio.timeout(30):
            while line := (await shim.stderr.readline()).decode():
                if match := re.search(r"running on http://[\d.]+:(\d+)", line):
                    break
            else:
                raise AssertionError("the shim never said where it listens")
        drain = asyncio.create_task(shim.stderr.read())  # keep its log from filling the pipe
        yield int(match.group(1))
        shim.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await shim.wait() == 0
        await drain
    finally:
        if shim.returncode is None:
            shim.kill()
            await shim.wait()


async def _exchange(port: int, data: bytes) -> tuple[bytes, float]:
    """Send ``data``; everything read until the shim closes the connection, and how long it took."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(READ_LIMIT):
            received = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    return received, time.monotonic() - started


def _error(answer: bytes, status: int) -> dict[str, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    assert int(status_line.split()[1]) == status, answer
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    error: dict[str, str] = json.loads(body)["error"]
    assert error["invocationId"] == headers["x-clrk-invocation-id"], "every answer of the shim has an id"
    return error


async def test_the_shim_refuses_in_json(shim_root: Path) -> None:
    async with _running_shim(shim_root) as port:
        unframed, _ = await _exchange(
            port, b"POST / HTTP/1.1\r\nHost: shim\r\nX-Evil: a\x00b\r\nContent-Length: 2\r\n\r\n{}"
        )
        assert _error(unframed, 400)["type"] == "bad_request"

        slow, seconds = await _exchange(port, b"POST / HTTP/1.1\r\nHost: shim\r\nContent-Len")
        assert _error(slow, 408)["type"] == "request_timeout"
        assert HEAD_TIMEOUT - EARLY <= seconds < HEAD_TIMEOUT + MARGIN

        nothing, seconds = await _exchange(port, b"")
        assert nothing == b"" and HEAD_TIMEOUT - EARLY <= seconds < HEAD_TIMEOUT + MARGIN

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=READ_LIMIT) as client:
            response = await client.post("/", content=b'{"still": "ok"}')
        assert response.status_code == 200 and json.loads(response.content)["data"] == {"still": "ok"}
