"""Run one invocation in one sandbox: feed stdin, collect stdout, log stderr, enforce the deadline.

The only I/O step between the pure envelope and the pure outcome mapping. Whatever happens, the
sandbox is closed on the way out (tree killed, directory removed), a cancelled run too: that is
how an invocation whose caller went away ends. An ``on_output`` listener sees each stdout chunk
as it arrives (a streamed answer, a live view), up to the stdout cap and no further. Nothing an agent controls can
hold the loop: its stderr is logged up to ``stderr_log_cap`` bytes (then one line counts what was
dropped; the span's tail keeps the last bytes all the same), and its response headers file is
read in a thread, never through a symlink or a FIFO (:meth:`Sandbox.read_response_headers
<clrk_runtime.sandbox.sandboxes.Sandbox.read_response_headers>`); a file refused there, or a
declared header the answer cannot carry, is left out with a warning naming the invocation.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence

from clrk_runtime.invocation.outcomes import RunResult, declared_headers
from clrk_runtime.sandbox.reading import RefusedFile
from clrk_runtime.sandbox.sandboxes import Sandbox

__all__ = ["AGENT_LOGGER", "OutputListener", "StderrLines", "StderrTail", "run_invocation"]

AGENT_LOGGER = "clrk_runtime.agent"
_log = logging.getLogger(AGENT_LOGGER)
_warnings = logging.getLogger(__name__)
_LINE_LIMIT = 65536
"""Bytes of stderr without a newline logged as one line."""
_DRAIN = 1.0
"""Seconds to wait for the pipes' end of file once the agent's tree was killed (a process that
escaped the kill may hold them open; what it writes later is dropped)."""

type OutputListener = Callable[[bytes], None]
"""Called on the event loop with each chunk of stdout as it arrives: it must be quick."""


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


class StderrLines:
    """Splits an agent's stderr into lines: each goes to the log, tagged, and to the tail.

    At most ``cap`` bytes are logged (whole lines): past that, chunks go to the tail only, and
    :meth:`flush` logs one line saying how many bytes were dropped. An agent writing gigabytes
    floods neither the log nor the loop (a dropped chunk is counted, never split).
    """

    def __init__(self, tail: StderrTail, tag: str, cap: int) -> None:
        self._tail = tail
        self._tag = tag
        self._partial = b""
        self._room = cap
        self._cap = cap
        self._dropped = 0

    def add(self, chunk: bytes) -> None:
        if self._dropped:
            self._drop(chunk)
            return
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            self._emit(line + b"\n")
        if self._dropped or len(self._partial) >= _LINE_LIMIT:  # past the cap, or no newline in sight
            self._emit(self._partial)
            self._partial = b""

    def flush(self) -> None:
        if self._partial:
            self._emit(self._partial)
            self._partial = b""
        if self._dropped:
            _log.warning(
                "%s stderr: %d bytes dropped from the log past its cap of %d bytes (CLRK_STDERR_LOG_CAP)",
                self._tag,
                self._dropped,
                self._cap,
            )
            self._dropped = 0

    def _emit(self, line: bytes) -> None:
        if self._dropped or len(line) > self._room:
            self._drop(line)
            return
        self._room -= len(line)
        self._tail.add(line)
        _log.info("%s %s", self._tag, line.rstrip(b"\n").decode("utf-8", "replace"))

    def _drop(self, data: bytes) -> None:
        self._dropped += len(data)
        self._tail.add(data)


class _Stdout:
    """Keeps at most ``cap`` bytes; past it, drops everything and calls ``overflowed``. Each
    chunk kept goes to ``listener`` too (the very bytes object: a stream holds no copy)."""

    def __init__(self, cap: int, overflowed: Callable[[], None], listener: OutputListener | None, tag: str) -> None:
        self._cap = cap
        self._chunks: list[bytes] = []
        self._size = 0
        self._overflowed = overflowed
        self._listener = listener
        self._tag = tag
        self.over_cap = False

    def add(self, chunk: bytes) -> None:
        if self.over_cap:
            return
        self._size += len(chunk)
        if self._size > self._cap:
            self.over_cap = True
            self._chunks.clear()
            self._overflowed()
            return
        self._chunks.append(chunk)
        if self._listener is not None:
            try:
                self._listener(chunk)
            except Exception:  # a listener's bug must not cost the run its output
                _warnings.exception("%s stdout listener failed", self._tag)

    def data(self) -> bytes:
        return b"".join(self._chunks)


async def run_invocation(
    sandbox: Sandbox,
    *,
    env: Mapping[str, str] | None,
    command: Sequence[str],
    stdin: bytes,
    invocation_id: str,
    deadline: float,
    stdout_cap: int,
    stderr_tail: StderrTail,
    stderr_log_cap: int | None = None,
    on_output: OutputListener | None = None,
) -> RunResult:
    """Run ``command`` in exactly ``env`` in ``sandbox``, with ``stdin`` as its input; a sandbox
    whose agent was started ahead (warm start: ``env`` is None then) gets ``stdin`` only.

    ``deadline`` is on the event loop's clock. ``stderr_log_cap`` (default: the sandbox's
    settings' ``stderr_log_cap``) bounds the bytes of stderr logged. ``on_output`` gets each
    stdout chunk as it arrives, while the total stays within ``stdout_cap`` (the chunk that
    passes it, and all after, never reach it). Closes ``sandbox`` before returning, or before a
    cancellation goes on: the agent's whole tree killed, the sandbox removed.
    """
    loop = asyncio.get_running_loop()
    timed_out = False
    # Sweep the session too (a plain sandbox without a uid of its own) unless the run came to its
    # end: after a deadline or a cancellation, something of the agent's tree may still run.
    sweep = True
    # Done when the agent exits or, past the stdout cap, at once: the answer is already a 502.
    finished: asyncio.Future[None] = loop.create_future()

    def finish(_: object = None) -> None:
        if not finished.done():
            finished.set_result(None)

    stdout = _Stdout(stdout_cap, finish, on_output, f"[{invocation_id}]")
    log_cap = sandbox.spec.settings.stderr_log_cap if stderr_log_cap is None else stderr_log_cap
    errors = StderrLines(stderr_tail, f"[{invocation_id}]", log_cap)
    try:
        if sandbox.started_ahead and sandbox.process is not None:
            process = sandbox.process
        else:
            assert env is not None, "an agent started on request needs its environment"
            try:
                process = await sandbox.launch(env, command)
            except OSError as exc:  # as the stub's shell would: 127 not found, 126 not runnable
                errors.add(f"clrk: cannot run {command[0]}: {exc.strerror or exc}\n".encode())
                code = 127 if exc.errno == errno.ENOENT else 126
                return RunResult(
                    exit_code=code, stdout=b"", timed_out=False, stdout_overflow=False, response_headers=""
                )
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
        sweep = timed_out
        # Leftovers (background children, a bridge) die now, so the pipes reach EOF.
        sandbox.kill()
        exit_code = await process.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_DRAIN):
                await asyncio.gather(process.stdout.eof, process.stderr.eof)
        errors.flush()
        headers = ""
        body = stdout.data()
        if not timed_out and not stdout.over_cap and exit_code == 0:
            headers = await _read_headers(sandbox, invocation_id)
            for reason in declared_headers(headers, body).ignored:
                _warnings.warning("[%s] response header from the agent: %s", invocation_id, reason)
        return RunResult(
            exit_code=exit_code,
            stdout=body,
            timed_out=timed_out,
            stdout_overflow=stdout.over_cap,
            response_headers=headers,
        )
    finally:
        await _close(sandbox, sweep)
        errors.flush()  # a cancelled run's last partial line of stderr, and what was dropped


async def _close(sandbox: Sandbox, sweep: bool) -> None:
    """Close ``sandbox`` to the end, however often the run is cancelled meanwhile (a second
    cancellation must not leave half a sandbox behind); a cancellation goes on once it is closed."""
    closing = asyncio.ensure_future(sandbox.close(sweep_session=sweep))
    cancelled = False
    while not closing.done():
        try:
            await asyncio.shield(closing)
        except asyncio.CancelledError:
            cancelled = True
    closing.result()
    if cancelled:
        raise asyncio.CancelledError


async def _read_headers(sandbox: Sandbox, invocation_id: str) -> str:
    """What the agent declared in ``$CLRK_METADATA_RESPONSE_HEADERS``; "" if nothing, or if the
    file was refused (logged: the answer goes out as if the agent had declared nothing)."""
    try:
        return await sandbox.read_response_headers()
    except RefusedFile as exc:
        _warnings.warning("[%s] response headers ignored: %s", invocation_id, exc)
        return ""
