"""Idle keep-alive connections to the real ``clrk-shim`` stay open for ``CLRK_KEEP_ALIVE_SECONDS``.

Knative's queue-proxy keeps idle upstream connections for 90 s and does not retry a POST on one
the server closed meanwhile, so the shim must keep them longer (120 s by default). Here the
setting is 7 s and the connections idle longer than uvicorn's own default (5 s), with a head
deadline of 1 s: idle connections survive it, half a head still gets its 408."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from clrk_runtime.settings import RuntimeSettings
from tests.support.runtime import agent, shim_port, shim_process

KEEP_ALIVE = 7
UVICORN_DEFAULT = 5
HEAD_TIMEOUT = 1.0
MARGIN = 2.0


def _post(body: bytes = b"{}") -> bytes:
    return b"POST / HTTP/1.1\r\nHost: shim\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?i)content-length: *(\d+)", head)
    assert length is not None, head
    return int(head.split(b" ", 2)[1]), await reader.readexactly(int(length.group(1)))


async def _closed_after(reader: asyncio.StreamReader, limit: float) -> float:
    """Seconds until the server closes the connection (it sends nothing before)."""
    started = time.monotonic()
    async with asyncio.timeout(limit):
        assert await reader.read() == b""
    return time.monotonic() - started


def test_the_default_outlasts_knatives_queue_proxy() -> None:
    assert RuntimeSettings().keep_alive_seconds == 120 > 90


async def test_an_idle_connection_is_kept_for_a_second_post(shim_root: Path) -> None:
    env = {"CLRK_KEEP_ALIVE_SECONDS": str(KEEP_ALIVE), "CLRK_HEAD_TIMEOUT_SECONDS": str(HEAD_TIMEOUT)}
    async with shim_process(shim_root, "--sandbox", "plain", "--", agent("echo.sh"), env=env) as shim:
        port = await shim_port(shim)

        async def reused() -> list[int]:
            """Idle past uvicorn's default between two POSTs: both answered on one connection."""
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            statuses = []
            for _ in range(2):
                writer.write(_post())
                statuses.append((await _answer(reader))[0])
                await asyncio.sleep(UVICORN_DEFAULT + 0.5)
            writer.close()
            return statuses

        async def left_idle() -> float:
            """Idle after one POST: closed once the keep-alive setting has passed."""
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_post())
            assert (await _answer(reader))[0] == 200
            try:
                return await _closed_after(reader, KEEP_ALIVE + MARGIN)
            finally:
                writer.close()

        async def half_a_head_after_idling() -> tuple[int, float]:
            """Idle past the head deadline, then half a head: 408 one head deadline later."""
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_post())
            assert (await _answer(reader))[0] == 200
            await asyncio.sleep(2 * HEAD_TIMEOUT)
            writer.write(b"POST / HTTP/1.1\r\nHost: sh")
            sent = time.monotonic()
            status, _ = await _answer(reader)
            await _closed_after(reader, MARGIN)
            writer.close()
            return status, time.monotonic() - sent

        statuses, idle_for, (refused, refused_after) = await asyncio.gather(
            reused(), left_idle(), half_a_head_after_idling()
        )
        shim.terminate()
        assert await shim.wait() == 0
    assert statuses == [200, 200]
    assert KEEP_ALIVE - 0.5 < idle_for < KEEP_ALIVE + MARGIN
    assert refused == 408
    assert HEAD_TIMEOUT - 0.05 < refused_after < HEAD_TIMEOUT + MARGIN
