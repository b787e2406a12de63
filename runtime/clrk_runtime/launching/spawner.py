"""Start sandbox processes through the spawner, and wire their pipes into asyncio.

The shim never forks: :class:`Spawner` keeps one small helper process (:mod:`clrk_runtime.launching.spawn_server`,
standard library only) that makes a sandbox's directories, starts its first process in a new
session with the sandbox uid, and removes what the sandbox left, while the shim's loop only sends
a request with the child's pipe ends attached (see the spawner's docstring for what this saves).

The spawner reaps its children and reports each exit status; :func:`ended` watches any other
process (a pid namespace's init) through a pidfd.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import itertools
import logging
import marshal
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clrk_runtime.launching import spawn_server
from clrk_runtime.launching.landlock import Confinement
from clrk_runtime.launching.pipes import Input, Output

__all__ = ["Child", "Launch", "Spawner", "SpawnerGone", "ended", "start_child"]

_BUFFER = 1 << 22
"""Socket buffer (bytes) each way: requests are ~1 KiB, so thousands fit before a send waits."""
_log = logging.getLogger(__name__)


class SpawnerGone(RuntimeError):
    """The spawner process ended: no sandbox can be started."""


@dataclass(frozen=True, slots=True)
class Launch:
    """A sandbox's first process: ``argv`` in exactly ``env``, in ``cwd``, in a new session."""

    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: str
    executable: str | None
    """The program's path; None: ``argv[0]``, looked up on ``env``'s PATH as exec would."""
    dirs: Sequence[str] = ()
    """Made 0700, owned by the sandbox uid, before the fork."""
    fds: Sequence[int] = ()
    """Numbers, from 3 on, that ``extra`` descriptors get in the child."""
    extra: Sequence[int] = field(default=())
    uid: int | None = None
    gid: int | None = None
    confinement: Confinement | None = None
    """A plain sandbox's Landlock domain, ``no_new_privs`` and limits (see
    :mod:`~clrk_runtime.launching.landlock`): the spawner then forks and applies them before the
    exec. None (bubblewrap, which sets ``no_new_privs`` itself): started as it is."""


class Child:
    """A started process: its stdin, stdout and stderr pipes, and its exit status."""

    def __init__(
        self, pid: int, exit_status: asyncio.Future[int], stdin: Input, stdout: Output, stderr: Output
    ) -> None:
        self.pid = pid
        self.exit_status = exit_status
        """Done once the process has ended and been reaped (-N: killed by signal N)."""
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr

    def close_pipes(self) -> None:
        """Close all three pipes (idempotent): unread output is dropped."""
        self.stdin.close()
        self.stdout.close()
        self.stderr.close()

    async def wait(self) -> int:
        """Wait for the process to end; its exit status (-N: killed by signal N)."""
        return await asyncio.shield(self.exit_status)


class Spawner:
    """The shim's side of the spawner process (one per runtime).

    ``python`` is the argv prefix that runs this same Python (default: ``sys.executable``); the
    spawner is started as ``python + ["-I", "-S", <spawn_server.py>, FD]``, with an empty
    environment (see :attr:`clrk_runtime.settings.RuntimeSettings.python`). With
    ``scope_signals`` (Landlock ABI 6 or more), the spawner enters a Landlock domain of its own
    first that scopes its signals: every sandbox then runs in it or below it, and the sweep that
    kills what is left of a sandbox's uid reaches that sandbox's processes only, never a host
    process that happens to run as the same uid.
    """

    def __init__(self, python: Sequence[str] | None = None, *, scope_signals: bool = False) -> None:
        self.python = list(python) if python else [sys.executable]
        self.scope_signals = scope_signals
        self._socket: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._tags = itertools.count()
        self._started: dict[int, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._gone = False
        self._stopped = False
        self._restarting = asyncio.Lock()

    async def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for end in (ours, theirs):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
        try:
            argv = [*self.python, "-I", "-S", str(Path(spawn_server.__file__)), str(theirs.fileno())]
            self._process = await asyncio.to_thread(
                subprocess.Popen,
                argv,
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                env={},
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            raise OSError(
                exc.errno, f"cannot start the spawner with python {self.python} (CLRK_PYTHON): {exc}"
            ) from exc
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._socket = ours
        asyncio.get_running_loop().add_reader(ours.fileno(), self._readable)
        if self.scope_signals:
            # The first request, so carried out before any child starts (one started earlier would
            # be out of the spawner's reach); not waited for, like the spawner's own start.
            (await self._post("scope", {}, ())).add_done_callback(_scoped)

    async def stop(self) -> None:
        """Close the socket: the spawner kills what is left of its children and exits."""
        self._stopped = True
        await self._shutdown()

    async def _shutdown(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
        process, self._process = self._process, None
        if process is not None:
            await asyncio.to_thread(process.wait)
        self._lost()

    async def spawn(self, launch: Launch, stdio: Sequence[int]) -> int:
        """Start ``launch`` with ``stdio`` (three descriptors) as its 0, 1, 2; its pid.

        The descriptors are sent, not consumed: the caller closes its copies.
        """
        request = {
            "dirs": list(launch.dirs),
            "fds": list(launch.fds),
            "uid": launch.uid,
            "gid": launch.gid,
            "cwd": launch.cwd,
            "executable": launch.executable,
            "argv": list(launch.argv),
            "env": dict(launch.env),
            "confine": None if launch.confinement is None else launch.confinement.to_wire(),
        }
        started = await self._send("spawn", request, [*stdio, *launch.extra])
        try:
            return await asyncio.shield(started)
        except asyncio.CancelledError:
            started.add_done_callback(self._abandon)  # it still starts: kill it once it has
            raise

    async def prepare(self, dirs: Sequence[str], uid: int | None, gid: int | None) -> None:
        """Make ``dirs`` (0700, owned by ``uid``/``gid`` when given) for a process started later."""
        await self._ask("prepare", {"dirs": list(dirs), "uid": uid, "gid": gid})

    async def clean(self, directory: str | None, uid: int | None, gid: int | None, places: Sequence[str]) -> bool:
        """Remove ``directory`` (a sandbox's, in a folder only root may write) and, with ``uid``,
        every top-level entry of ``uid``'s in ``places`` with all below it; True once nothing is
        left. Done by the spawner once no child of ``uid`` runs: a few entries itself, more (or
        any place to scan) in a process of its own, as ``uid`` in the places; never in the
        shim's loop."""
        request = {"directory": directory, "uid": uid, "gid": gid, "places": list(places)}
        return await self._ask("clean", request) == 0

    async def _ask(self, op: str, request: dict[str, Any]) -> int:
        """Send a request that passes no descriptor and wait for its answer (it is carried out
        even if the waiting is cancelled)."""
        return await asyncio.shield(await self._send(op, request, ()))

    async def _send(self, op: str, request: dict[str, Any], fds: Sequence[int]) -> asyncio.Future[int]:
        """Send one request; the future of its reply."""
        if (self._gone and not self._stopped) or self._restarting.locked():
            await self._restart()  # or wait for the restart under way
        return await self._post(op, request, fds)

    async def _post(self, op: str, request: dict[str, Any], fds: Sequence[int]) -> asyncio.Future[int]:
        """Send one request to the spawner running now (none: :class:`SpawnerGone`)."""
        if self._socket is None:
            raise SpawnerGone("the spawner process is not running")
        tag = next(self._tags)
        reply: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._started[tag] = reply
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
        try:
            # A blocking send: it waits only if the spawner is thousands of requests behind.
            self._socket.sendmsg([marshal.dumps((op, tag, request))], ancillary)
        except OSError as exc:
            self._started.pop(tag, None)
            raise SpawnerGone(f"the spawner process is not reachable: {exc}") from exc
        return reply

    async def _restart(self) -> None:
        """Start a new spawner in place of one that died (its sandboxes died with it)."""
        async with self._restarting:
            if not self._gone:
                return
            _log.warning("the spawner process ended unexpectedly; starting a new one")
            await self._shutdown()
            self._gone = False
            await self.start()

    def _abandon(self, started: asyncio.Future[int]) -> None:
        if started.cancelled() or started.exception() is not None:
            return
        pid = started.result()
        self.exit_status(pid)  # claimed, so that its exit report does not linger
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)

    def exit_status(self, pid: int) -> asyncio.Future[int]:
        """A future for ``pid``'s exit status (-N: signal N), resolved when the spawner reaps it."""
        future = self._exits.get(pid)
        if future is None:
            future = self._exits[pid] = asyncio.get_running_loop().create_future()
        elif future.done():
            del self._exits[pid]  # it ended before anyone asked
        return future

    def _readable(self) -> None:
        assert self._socket is not None
        while True:
            try:
                message = self._socket.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            if not message:
                asyncio.get_running_loop().remove_reader(self._socket.fileno())
                self._lost()
                return
            kind, key, value = marshal.loads(message)  # noqa: S302 - the spawner's end of a socketpair
            if kind == "exit":
                waiting = self._exits.pop(key, None)
                if waiting is None:  # kept until exit_status(pid) asks
                    waiting = self._exits[key] = asyncio.get_running_loop().create_future()
                self._resolve(waiting, os.waitstatus_to_exitcode(value))
            elif kind in ("started", "done"):
                self._resolve(self._started.pop(key, None), value)
            else:
                started = self._started.pop(key, None)
                if started is not None and not started.done():
                    code, detail = value
                    started.set_exception(OSError(code, detail))

    @staticmethod
    def _resolve(future: asyncio.Future[int] | None, value: int) -> None:
        if future is not None and not future.done():
            future.set_result(value)

    def _lost(self) -> None:
        """The spawner is gone: its children were killed with it (the spawner kills them on
        exit; a killed spawner leaves them, so each group gets SIGKILL here)."""
        self._gone = True
        for started in self._started.values():
            if not started.done():
                started.set_exception(SpawnerGone("the spawner process ended"))
        self._started.clear()
        for pid, future in list(self._exits.items()):
            if future.done():
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            self._resolve(future, -signal.SIGKILL)
            del self._exits[pid]


def _scoped(reply: asyncio.Future[int]) -> None:
    if reply.cancelled():
        return
    failure = reply.exception()  # a spawner that died meanwhile says so on the next request
    if isinstance(failure, OSError):
        _log.warning("the spawner could not scope its signals (%s): a sweep reaches every process of its uid", failure)


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


async def start_child(spawner_: Spawner, launch: Launch) -> Child:
    """Start ``launch`` with piped stdin, stdout and stderr, joined to the running loop."""
    stdin_read, stdin_write = os.pipe()
    stdout_read, stdout_write = os.pipe()
    stderr_read, stderr_write = os.pipe()
    ours = [stdin_write, stdout_read, stderr_read]
    try:
        pid = await spawner_.spawn(launch, (stdin_read, stdout_write, stderr_write))
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        for fd in (stdin_read, stdout_write, stderr_write):
            os.close(fd)
    return Child(pid, spawner_.exit_status(pid), Input(stdin_write), Output(stdout_read), Output(stderr_read))
