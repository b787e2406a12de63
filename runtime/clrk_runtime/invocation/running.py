"""Run one invocation in one sandbox: feed stdin, collect stdout, log stderr, enforce the deadline.

The only I/O step between the pure envelope and the pure outcome mapping. Whatever happens, the
sandbox is closed on the way out (tree killed, directory removed).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence

from clrk_runtime.invocation.outcomes import RunResult
from clrk_runtime.sandbox.sandboxes import Sandbox

__all__ = ["AGENT_LOGGER", "StderrTail", "run_invocation"]

AGENT_LOGGER = "clrk_runtime.agent"
_log = logging.getLogger(AGENT_LOGGER)
_LINE_LIMIT = 65536
"""Bytes of stderr without a newline logged as one line."""
_DRAIN = 1.0
"""Seconds to wait for the pipes' end of file once the agent's tree was killed (a process that
escaped the kill may hold them open; what it writes later is dropped)."""


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


class _StderrLines:
    """Splits an agent's stderr into lines: each goes to the log, tagged, and to the tail."""

    def __init__(self, tail: StderrTail, tag: str) -> None:
        self._tail = tail
        self._tag = tag
        self._partial = b""

    def add(self, chunk: bytes) -> None:
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            self._emit(line + b"\n")
        if len(self._partial) >= _LINE_LIMIT:  # no newline in sight: log what is there
            self.flush()

    def flush(self) -> None:
        if self._partial:
            self._emit(self._partial)
            self._partial = b""

    def _emit(self, line: bytes) -> None:
        self._tail.add(line)
        _log.info("%s %s", self._tag, line.rstrip(b"\n").decode("utf-8", "replace"))


class _Stdout:
    """Keeps at most ``cap`` bytes; past it, drops everything and calls ``overflowed``."""

    def __init__(self, cap: int, overflowed: Callable[[], None]) -> None:
        self._cap = cap
        self._chunks: list[bytes] = []
        self._size = 0
        self._overflowed = overflowed
        self.over_cap = False

    def add(self, chunk: bytes) -> None:
        if self.over_cap:
            return
        self._size += len(chunk)
        if self._size > self._cap:
            self.over_cap = True
            self._chunks.clear()
            self._overflowed()
        else:
            self._chunks.append(chunk)

    def data(self) -> bytes:
        return b"".join(self._chunks)


async def run_invocation(
    sandbox: Sandbox,
    *,
    env: Mapping[str, str],
    command: Sequence[str],
    stdin: bytes,
    invocation_id: str,
    deadline: float,
    stdout_cap: int,
    stderr_tail: StderrTail,
) -> RunResult:
    """Run ``command`` in exactly ``env`` in ``sandbox``, with ``stdin`` as its input.

    ``deadline`` is on the event loop's clock. Closes ``sandbox`` before returning.
    """
    loop = asyncio.get_running_loop()
    timed_out = False
    # Done when the agent exits or, past the stdout cap, at once: the answer is already a 502.
    finished: asyncio.Future[None] = loop.create_future()

    def finish(_: object = None) -> None:
        if not finished.done():
            finished.set_result(None)

    stdout = _Stdout(stdout_cap, finish)
    errors = _StderrLines(stderr_tail, f"[{invocation_id}]")
    try:
        try:
            process = await sandbox.launch(env, command)
        except OSError as exc:  # as the stub's shell would: 127 not found, 126 not runnable
            errors.add(f"clrk: cannot run {command[0]}: {exc.strerror or exc}\n".encode())
            code = 127 if exc.errno == errno.ENOENT else 126
            return RunResult(exit_code=code, stdout=b"", timed_out=False, stdout_overflow=False, response_headers="")
        process.exit_status.add_done_callback(finish)
        process.stdout.consume(stdout.add)
        process.stderr.consume(errors.add)
        process.stdin.feed(stdin)
        try:
            async with asyncio.timeout_at(deadline):
                await finished
        except TimeoutError:
            timed_out = True
        finally:
            process.exit_status.remove_done_callback(finish)
        # Leftovers (background children, a bridge) die now, so the pipes reach EOF.
        sandbox.kill()
        exit_code = await process.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_DRAIN):
                await asyncio.gather(process.stdout.eof, process.stderr.eof)
        errors.flush()
        headers = ""
        if not timed_out and not stdout.over_cap:
            headers = _read_headers(sandbox)  # a few bytes on a local disk: not worth a thread
        return RunResult(
            exit_code=exit_code,
            stdout=stdout.data(),
            timed_out=timed_out,
            stdout_overflow=stdout.over_cap,
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
