"""Run one invocation in one sandbox: feed stdin, collect stdout, log stderr, enforce the deadline.

The only I/O step between the pure envelope and the pure outcome mapping. Whatever happens, the
sandbox is closed on the way out (tree killed, directory removed).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from clrk_runtime.outcomes import RunResult
from clrk_runtime.sandboxes import Sandbox

__all__ = ["AGENT_LOGGER", "StderrTail", "run_invocation"]

AGENT_LOGGER = "clrk_runtime.agent"
_log = logging.getLogger(AGENT_LOGGER)
_CHUNK = 65536


class StderrTail:
    """The last ``limit`` bytes of an agent's stderr (for the span); lines also go to the log."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._chunks: deque[bytes] = deque()
        self._size = 0

    def add(self, line: bytes) -> None:
        self._chunks.append(line)
        self._size += len(line)
        while self._size > self.limit and len(self._chunks) > 1:
            self._size -= len(self._chunks.popleft())

    def text(self) -> str:
        data = b"".join(self._chunks)[-self.limit :] if self.limit else b""
        return data.decode("utf-8", "replace")


def _feed(stdin: asyncio.WriteTransport, data: bytes) -> None:
    """Hand the envelope to the pipe: the transport writes it as the agent reads, then closes.

    (If the agent exits without reading it all, the broken pipe just ends the transport.)
    """
    stdin.write(data)
    stdin.close()


async def _collect(stream: asyncio.StreamReader, cap: int, overflow: asyncio.Event) -> tuple[bytes, bool]:
    """Read to EOF, keeping at most ``cap`` bytes; past it, set ``overflow`` and discard the rest.

    Reading on to EOF lets the pipe close; past the cap the agent is killed anyway.
    """
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(_CHUNK):
        if overflow.is_set():
            continue
        size += len(chunk)
        if size > cap:
            overflow.set()
            chunks.clear()
        else:
            chunks.append(chunk)
    return b"".join(chunks), overflow.is_set()


async def _drain_stderr(stream: asyncio.StreamReader, tail: StderrTail, tag: str) -> None:
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # a line over the reader's limit: take what is buffered
            line = await stream.read(_CHUNK)
        if not line:
            return
        tail.add(line)
        _log.info("%s %s", tag, line.rstrip(b"\n").decode("utf-8", "replace"))


async def run_invocation(
    sandbox: Sandbox,
    *,
    script: bytes,
    stdin: bytes,
    invocation_id: str,
    deadline: float,
    stdout_cap: int,
    stderr_tail: StderrTail,
) -> RunResult:
    """Run ``script`` (see :func:`~clrk_runtime.sandboxing.launch_script`) in ``sandbox``.

    ``deadline`` is on the event loop's clock. Closes ``sandbox`` before returning.
    """
    process = sandbox.process
    timed_out = False
    try:
        sandbox.launch(script)
        _feed(process.stdin, stdin)
        overflow = asyncio.Event()
        reader = asyncio.ensure_future(_collect(process.stdout, stdout_cap, overflow))
        errors = asyncio.ensure_future(_drain_stderr(process.stderr, stderr_tail, f"[{invocation_id}]"))
        ended = asyncio.ensure_future(process.exited())
        overflowed = asyncio.ensure_future(overflow.wait())
        try:
            async with asyncio.timeout_at(deadline):
                # Past the stdout cap there is no point waiting: the answer is already a 502.
                await asyncio.wait({ended, overflowed}, return_when="FIRST_COMPLETED")
        except TimeoutError:
            timed_out = True
        finally:
            overflowed.cancel()
            ended.cancel()
        # Leftovers (background children, a bridge) die now, so the pipes reach EOF.
        sandbox.kill()
        exit_code = await process.wait()
        stdout, over_cap = await reader
        await errors
        headers = ""
        if not timed_out and not over_cap:
            headers = _read_headers(sandbox)  # a few bytes on a local disk: not worth a thread
        return RunResult(
            exit_code=exit_code,
            stdout=stdout,
            timed_out=timed_out,
            stdout_overflow=over_cap,
            response_headers=headers,
        )
    finally:
        await sandbox.close(sweep_session=timed_out)


def _read_headers(sandbox: Sandbox) -> str:
    try:
        with open(sandbox.response_headers_file, "rb") as file:
            return file.read(8192).decode("utf-8", "replace")
    except OSError:
        return ""
