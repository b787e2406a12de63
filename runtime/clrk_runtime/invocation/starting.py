"""Warm start: launch a sandbox's agent before its request, and wait until it says it is ready.

The agent starts in the environment an invocation's has, less what only a request can say (see
:data:`~clrk_runtime.invocation.environment.PER_REQUEST`), with ``$CLRK_READY_FD`` naming the
descriptor it writes a line to once its start-up is done; its stdin stays open and empty until the
request comes (:func:`~clrk_runtime.invocation.running.run_invocation` writes the envelope then).
Until then its stderr is logged under ``[<agent> start-up <id>]``, and what it writes to stdout is
no answer to anything: dropped, with a warning. An agent that exits first, or is still not ready
after ``warm_start_timeout``, raises :class:`StartFailed` with a one-line reason (its exit code
and the last of its stderr); the caller closes the sandbox.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

from clrk_runtime.invocation.environment import READY_FD, agent_environment
from clrk_runtime.invocation.running import AGENT_LOGGER, StderrLines, StderrTail
from clrk_runtime.sandbox.sandboxes import Sandbox
from clrk_runtime.settings import RuntimeSettings

__all__ = ["StartFailed", "start_ahead"]

_log = logging.getLogger(AGENT_LOGGER)
_REASON_TAIL = 300
"""Characters of stderr a failure's reason quotes (the whole stderr is in the log)."""


class StartFailed(Exception):
    """The agent cannot be handed a request: it exited, or never said it was ready."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def start_ahead(
    sandbox: Sandbox, settings: RuntimeSettings, *, startup_id: str, proxy: tuple[str, str] | None
) -> None:
    """Launch ``sandbox``'s agent (made with ``ahead=True``) and return once it is ready.

    ``proxy`` is the sandbox's own ``(user, password)`` at the identity relay; ``startup_id``
    names the start-up in the log (and at the egress gateway, for calls made before the request).
    Raises :class:`StartFailed`; the sandbox is left for the caller to close either way.
    """
    assert sandbox.ready is not None and sandbox.ready_fd is not None
    loop = asyncio.get_running_loop()
    user, password = proxy if proxy is not None else (None, None)
    env = agent_environment(
        settings,
        sandbox.paths,
        invocation_id=None,
        deadline=None,
        traceparent="",
        proxy_token=password,
        proxy_user=user,
        ready_fd=sandbox.ready_fd,
    )
    tag = f"[{settings.agent} start-up {startup_id}]"
    tail = StderrTail(settings.stderr_tail)
    errors = StderrLines(tail, tag, settings.stderr_log_cap)
    try:
        process = await sandbox.launch(env, settings.command)
    except OSError as exc:
        code = 127 if exc.errno == errno.ENOENT else 126
        raise StartFailed(f"cannot run {settings.command[0]}: {exc.strerror or exc} (exit status {code})") from None
    sandbox.started_ahead = True
    process.stderr.consume(errors.add)
    process.stdout.consume(_EarlyOutput(tag))
    ready: asyncio.Future[None] = loop.create_future()

    def said_ready(_: bytes) -> None:
        if not ready.done():
            ready.set_result(None)

    sandbox.ready.consume(said_ready)
    waiting: set[asyncio.Future[Any]] = {ready, process.exit_status}
    try:
        async with asyncio.timeout(settings.warm_start_timeout):
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    except TimeoutError:
        errors.flush()
        raise StartFailed(
            f"not ready after {settings.warm_start_timeout:g}s (CLRK_WARM_START_TIMEOUT): it must write a line to"
            f" ${READY_FD} once started, then read stdin{_quoted(tail)}"
        ) from None
    if ready.done():
        return
    code = process.exit_status.result()
    await asyncio.wait({process.stderr.eof}, timeout=1.0)  # its last words
    errors.flush()
    status = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
    raise StartFailed(f"{status} before it said it was ready{_quoted(tail)}")


def _quoted(tail: StderrTail) -> str:
    text = " ".join(tail.text().split())
    if not text:
        return " (nothing on stderr)"
    return f"; stderr: {text[-_REASON_TAIL:]}"


class _EarlyOutput:
    """What an agent writes to stdout before its request: no answer to anything, dropped."""

    def __init__(self, tag: str) -> None:
        self._tag = tag
        self._warned = False

    def __call__(self, chunk: bytes) -> None:
        if not self._warned:
            self._warned = True
            _log.warning("%s wrote to stdout before its request; dropped (stdout is the answer)", self._tag)
