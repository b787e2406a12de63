"""Start a child process without stalling the event loop, and wire its pipes into asyncio.

``asyncio.create_subprocess_exec`` forks on the event loop's thread and waits there until the
child has exec'd: measured at ≈1.9 ms per spawn under load (half of the shim's loop time at 16
concurrent invocations, see ``hack/bench_shim.py``). ``subprocess.Popen`` releases the GIL while
it waits, so here it runs in a worker thread; the pipes then join the loop, and the exit is
watched through a pidfd, which also tells "the process ended" apart from "its pipes closed"
(``Process.wait()`` waits for both, and a background child can hold stdout open).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Sequence
from typing import Any

__all__ = ["Child", "ended", "spawn"]

_LIMIT = 2**16


class Child:
    """A started process: its stdin transport, stdout and stderr readers, and its exit."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        stdin: asyncio.WriteTransport,
        stdout: asyncio.StreamReader,
        stderr: asyncio.StreamReader,
        transports: list[asyncio.BaseTransport],
    ) -> None:
        self.popen = popen
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._transports = transports

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    async def exited(self) -> None:
        """Return once the process has ended (without reaping it)."""
        if self.popen.returncode is None:
            await ended(self.popen.pid)

    def close_pipes(self) -> None:
        """Close all three pipes (idempotent): unread output is dropped."""
        for transport in self._transports:
            transport.close()

    async def wait(self) -> int:
        """Wait for the process to end, reap it, return its exit status (-N: signal N)."""
        await self.exited()
        return self.popen.wait()  # it has ended: waitpid returns at once


async def ended(pid: int) -> None:
    """Return once process ``pid`` has ended (a pidfd turns readable; nothing is reaped)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _popen(argv: list[str], pass_fds: tuple[int, ...], popen: dict[str, Any]) -> subprocess.Popen[bytes]:
    pipe = subprocess.PIPE
    return subprocess.Popen(argv, stdin=pipe, stdout=pipe, stderr=pipe, bufsize=0, pass_fds=pass_fds, **popen)


async def spawn(argv: Sequence[str], *, pass_fds: Sequence[int], **popen: Any) -> Child:
    """Start ``argv`` with piped stdin, stdout and stderr (``popen``: more Popen arguments)."""
    process = await asyncio.to_thread(_popen, list(argv), tuple(pass_fds), popen)
    assert process.stdin and process.stdout and process.stderr
    loop = asyncio.get_running_loop()
    transports: list[asyncio.BaseTransport] = []
    try:
        stdout = asyncio.StreamReader(limit=_LIMIT, loop=loop)
        out, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdout, loop=loop), process.stdout)
        transports.append(out)
        stderr = asyncio.StreamReader(limit=_LIMIT, loop=loop)
        err, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stderr, loop=loop), process.stderr)
        transports.append(err)
        stdin, _ = await loop.connect_write_pipe(asyncio.Protocol, process.stdin)
    except BaseException:
        for transport in transports:
            transport.close()
        process.kill()
        await asyncio.to_thread(process.wait)
        raise
    return Child(process, stdin, stdout, stderr, [stdin, *transports])
