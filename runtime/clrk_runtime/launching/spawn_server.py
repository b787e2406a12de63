"""The spawner: a small helper process that starts every sandbox's first process for the shim.

Run by :class:`clrk_runtime.launching.spawner.Spawner` as ``python -I -S spawner.py FD``, with FD one end
of a ``SOCK_SEQPACKET`` socket pair; standard library only. It exists so that the shim's event
loop never forks, execs or switches uid, and so that the uid switch costs no extra exec:

* the shim forking itself cost ≈ 1.9 ms of its loop per spawn, and ≈ 3 ms with a uid switch
  (which rules out ``vfork``);
* prefixing ``setpriv`` to switch uid after the exec cost ≈ 1.4 ms of CPU per sandbox;
* a Python ``fork`` costs ≈ 1 ms even from this small process (measured on the 2-core machine
  of ``hack/bench_shim.py``), while ``posix_spawn`` (a ``vfork``) costs ≈ 0.5 ms with the exec.

So each child is made with ``posix_spawn``, which cannot switch uid by itself but can reset its
effective ids to the caller's real ones (``RESETIDS``): the spawner takes the sandbox ids as its
*real* ids for the duration of the call (keeping root as effective and saved ids), and the exec
then sets the child's saved ids too: the child ends with the sandbox uid and gid in all three,
no supplementary group and no capability. Being single-threaded, the spawner is the only thread
whose ids move, for the microseconds of the call; and while its real uid is a sandbox's, no
process of that uid exists to signal it (a uid is reused only once all of its processes died).

Requests (one datagram each, :mod:`marshal`-encoded, the child's descriptors attached with
``SCM_RIGHTS``): ``(tag, request)``, where ``request`` holds ``dirs`` (made 0700 and handed to
the sandbox uid first), ``fds`` (the numbers the attached descriptors after the first three
become in the child), ``uid``/``gid`` (``None``: keep ours), ``cwd``, ``executable`` (``None``:
``argv[0]`` on ``env``'s PATH), ``argv`` and ``env``.

Replies: ``("started", tag, pid)``, ``("failed", tag, (errno, message))``, and
``("exit", pid, status)`` (a raw wait status) once each child has ended and been reaped, and, when
it ran as a uid of its own, once every other process of that uid has been killed (see
:func:`_sweep`). When the shim's end closes, every child's process group and every orphan we
adopted is killed, and the spawner exits.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import errno
import fcntl
import marshal
import os
import selectors
import signal
import socket
import sys
import time
from typing import Any

_MAX_MESSAGE = 1 << 20
_MAX_FDS = 8
_HIGH_FD = 64
"""Received descriptors below this are moved at or above it first, so that placing one in the
child never clobbers another."""
_PR_SET_CHILD_SUBREAPER = 36
_SWEEP_WITHIN = 1.0
_SWEEP_PAUSE = 0.0005
"""After its kill, a sweep reaps and looks again every half millisecond, for one second at most."""
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)
"""Signals ignored or handled here that a child must get back at their defaults."""


def _receive(sock: socket.socket) -> tuple[bytes, list[int]]:
    message, ancillary, _flags, _address = sock.recvmsg(_MAX_MESSAGE, socket.CMSG_SPACE(_MAX_FDS * 4))
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    for fd in fds:
        os.set_inheritable(fd, False)  # only their dup2'ed copies reach the child
    return message, list(fds)


def _say(sock: socket.socket, *reply: str | int | tuple[int, str]) -> None:
    sock.sendall(marshal.dumps(reply))


def _make_dirs(dirs: list[str], uid: int | None, gid: int | None) -> None:
    for path in dirs:
        os.mkdir(path, 0o700)
        if uid is not None and gid is not None:
            os.chown(path, uid, gid)


def _start(request: dict[str, Any], fds: list[int]) -> int:
    uid, gid = request["uid"], request["gid"]
    targets = [0, 1, 2, *request["fds"]]
    # posix_spawn's file actions dup2 in order: keep every source above every target.
    sources = [fd if fd > max(targets) else fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _HIGH_FD) for fd in fds]
    try:
        os.chdir(request["cwd"])
        if uid is not None:
            os.setresgid(gid, 0, 0)
            os.setresuid(uid, 0, 0)
        return os.posix_spawn(
            request["executable"] or _which(request["argv"][0], request["env"].get("PATH", os.defpath)),
            request["argv"],
            request["env"],
            file_actions=[(os.POSIX_SPAWN_DUP2, fd, target) for fd, target in zip(sources, targets, strict=True)],
            setsid=True,
            setsigdef=_DEFAULT_SIGNALS,
            resetids=uid is not None,
        )
    finally:
        if uid is not None:
            os.setresuid(0, 0, 0)
            os.setresgid(0, 0, 0)
        for source, fd in zip(sources, fds, strict=True):
            if source != fd:
                os.close(source)


def _which(name: str, path: str) -> str:
    """Where exec would find ``name`` (a name with a slash is used as it is)."""
    if "/" in name:
        return name
    for folder in path.split(os.pathsep):
        candidate = os.path.join(folder or ".", name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(2, "not found on PATH", name)


def _spawn(
    sock: socket.socket, tag: int, request: dict[str, Any], fds: list[int], children: dict[int, int | None]
) -> None:
    try:
        _make_dirs(request["dirs"], request["uid"], request["gid"])
        pid = _start(request, fds)
    except (OSError, ValueError) as exc:
        code = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EINVAL
        detail = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.filename else str(exc)
        _say(sock, "failed", tag, (code, detail))
        return
    children[pid] = request["uid"]
    _say(sock, "started", tag, pid)


def _reap(sock: socket.socket, children: dict[int, int | None]) -> None:
    """Reap every ended child. For each the shim started: kill everything left of its uid
    (:func:`_sweep`), then report its exit. Adopted orphans are just reaped."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in children:
            uid = children.pop(pid)
            if uid is not None:
                _sweep(uid, children)
            _say(sock, "exit", pid, status)


def _sweep(uid: int, children: dict[int, int | None]) -> None:
    """SIGKILL every process of ``uid``; return once none of them is our child any more (bounded).

    Run as a sandbox's first process is reaped, before its exit is reported: so by the time the
    shim hears of it, nothing of the sandbox runs, and its uid may go to another sandbox.
    ``kill(-1)`` reaches every process the caller may signal: with ``uid`` as our real and
    effective uid (root stays the saved one, to come back to), exactly that uid's processes,
    wherever they moved (another session, another group, a double fork). The kernel holds off
    forks while it walks the process list, so none is missed. Those orphaned along the way are
    ours (we are their subreaper): we wait for them to die and reap them.
    """
    os.setresuid(uid, uid, 0)
    try:
        os.kill(-1, signal.SIGKILL)  # succeeds even when nothing matched: no way to tell from here
    finally:
        os.setresuid(0, 0, 0)
    deadline = time.monotonic() + _SWEEP_WITHIN
    while True:
        # Orphans are not a sandbox's first process; a zombie's Uid still reads as it ran.
        left = [pid for pid in _adopted() if pid not in children and _uid_of(pid) == uid]
        if not left or time.monotonic() > deadline:
            return
        for pid in left:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(_SWEEP_PAUSE)


def _uid_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _adopted() -> list[int]:
    """Our live children: those we started and the orphans we adopted as their subreaper."""
    found = []
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/children") as listing:
            found += [int(pid) for pid in listing.read().split()]
    return found


def _kill_all(children: dict[int, int | None]) -> None:
    """SIGKILL what we started (their groups) and what we adopted, and reap it all."""
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    while alive := _adopted():
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, 0):
                pass


def _become_subreaper() -> None:
    """Orphans of our children (a killed bwrap's namespace init, a daemon's leftovers) become
    ours rather than the container's init's, which may never reap them (the shim can be PID 1)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def serve(sock: socket.socket) -> None:
    """Answer requests on ``sock`` until its other end closes; then kill what is left."""
    children: dict[int, int | None] = {}
    """The processes the shim started, and the uid each runs as."""
    _become_subreaper()
    if os.geteuid() == 0:
        os.setgroups([])  # the children inherit no supplementary group
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda number, frame: None)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the shim ends us by closing its end
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    try:
        while True:
            for key, _events in selector.select():
                if key.fileobj is sock:
                    message, fds = _receive(sock)
                    if not message:
                        return
                    try:
                        tag, request = marshal.loads(message)  # noqa: S302 - the shim's end of a socketpair
                        _spawn(sock, tag, request, fds, children)
                    finally:
                        for fd in fds:
                            os.close(fd)
                else:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_read, 4096)
                    _reap(sock, children)
    finally:
        _kill_all(children)


if __name__ == "__main__":
    connection = socket.socket(fileno=int(sys.argv[1]))
    connection.set_inheritable(False)
    serve(connection)
