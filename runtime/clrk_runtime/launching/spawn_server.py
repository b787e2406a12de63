"""The spawner: a small helper process that starts every sandbox's first process for the shim.

Run by :class:`clrk_runtime.launching.spawner.Spawner` as ``PYTHON -I -S spawn_server.py FD``, with
FD one end of a ``SOCK_SEQPACKET`` socket pair; standard library only (and :mod:`cleaning`, the file
beside this one). It exists so that the shim's event loop never forks, execs or switches uid, and
so that the uid switch costs no extra exec:

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

A plain sandbox's process is the exception: it must be confined (Landlock, ``no_new_privs``,
resource limits: :mod:`landlock`, the file beside this one) by code that runs in the child
between ``fork`` and ``exec``, which ``posix_spawn`` cannot run. For it the spawner forks (its
own fork: it is a separate single-threaded process, the shim's loop still never forks), builds the
Landlock ruleset before the fork (so that a refusal is an error it reports), and waits on a
close-on-exec pipe for the exec, so that a program that cannot start raises here as with
``posix_spawn``. Measured with ``/bin/true`` on the same 2-core machine: ≈ 1.5 ms of the
spawner's time per spawn (≈ 0.5 ms of its CPU; the rest is the child's own work until its exec),
against ≈ 0.35 ms (0.07 ms CPU) with ``posix_spawn``; the shim's loop pays nothing either way.
End to end, a cold plain invocation of ``cat`` through :class:`AgentRuntime` went from a median of
≈ 2.7 ms to ≈ 3.9 ms (300 in a row, the machine shared).
Bubblewrap sandboxes keep ``posix_spawn`` (bwrap sets ``no_new_privs`` itself).

Requests (one datagram each, :mod:`marshal`-encoded, the child's descriptors attached with
``SCM_RIGHTS``): ``(op, tag, request)``:

* ``spawn``: ``dirs`` (made 0700 and handed to the sandbox uid first), ``fds`` (the numbers the
  attached descriptors after the first three become in the child), ``uid``/``gid`` (``None``:
  keep ours), ``cwd``, ``executable`` (``None``: ``argv[0]`` on ``env``'s PATH), ``argv``,
  ``env`` and ``confine`` (``None``, or a :class:`landlock.Confinement` in its wire form: then
  forked and confined, as above). Answered ``("started", tag, pid)``.
* ``prepare``: ``dirs``, ``uid``, ``gid``: the directories of a sandbox whose process comes later
  (a warm plain sandbox). Answered ``("done", tag, 0)``.
* ``scope`` (sent first, before any child): enter a Landlock domain that scopes signals
  (:func:`landlock.scope_signals`). Every child is then in it or in a domain below it, and
  :meth:`_Server.sweep`'s ``kill(-1)`` as a sandbox's uid reaches only processes of that uid in
  it: a host process that runs as the same uid (a systemd dynamic user, say) is out of reach.
  Answered ``("done", tag, 0)``.
* ``clean``: ``directory``, ``uid``, ``gid``, ``places``: remove a sandbox's directory (if not
  ``None``) and, with a uid, every entry of that uid at the top of each of ``places`` (the shared
  places it may have written to: ``/tmp`` …), with all below it (:mod:`cleaning`). Held until no
  child of that uid is left. A directory with a few entries and no place to scan is done here; anything more in a
  process forked for it, which removes the directory's tree relative to directory descriptors
  (never following a symlink), then drops to the sandbox uid for good before it touches a shared
  place: there it can remove only what that uid could. Answered ``("done", tag, code)``: 0 once
  nothing is left, else something could not be removed (the uid should not be reused).

A confined child with a storage cap (``disk``) is measured every half second, each time by a
meter process forked for it (:meth:`_Server.meter`), which walks its directories as root without
following a symlink; past the cap its group is killed, and its exit is reported as a kill by
``SIGXFSZ`` (the kernel's signal for a file over its size limit), whatever signal ended it.

Every child starts with umask ``077``: what a sandbox creates, in a shared place too, is
readable by its own uid alone. Any request may be answered ``("failed", tag, (errno, message))``
instead. And
``("exit", pid, status)`` (a raw wait status) once each child has ended and been reaped, and, when
it ran as a uid of its own, once every other process of that uid has been killed (see
:meth:`_Server.sweep`). When the shim's end closes, every child's process group and every orphan
we adopted is killed, and the spawner exits.
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

if __package__:
    from clrk_runtime.launching import cleaning, confined, landlock
else:  # run as a file (python -I -S spawn_server.py): neither its folder nor site-packages is on the path
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))
    import cleaning  # type: ignore[import-not-found,no-redef]
    import confined  # type: ignore[import-not-found,no-redef]
    import landlock  # type: ignore[import-not-found,no-redef]

_MAX_MESSAGE = 1 << 20
_MAX_FDS = 8
_HIGH_FD = 64
"""Received descriptors below this are moved at or above it first, so that placing one in the
child never clobbers another."""
_PR_SET_CHILD_SUBREAPER = 36
_SWEEP_WITHIN = 1.0
_SWEEP_PAUSE = 0.0005
"""After its kill, a sweep reaps and looks again every half millisecond, for one second at most."""
_SMALL = 64
"""Entries of a sandbox's directory removed here, beyond which a cleaner process takes over."""
_METER_EVERY = 0.5
"""Seconds between the end of one measure of a confined sandbox's directory and the next."""
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


def _make_dirs(dirs: list[str], uid: int | None, gid: int | None) -> None:
    for path in dirs:
        os.mkdir(path, 0o700)
        if uid is not None and gid is not None:
            os.chown(path, uid, gid)


def _start(request: dict[str, Any], fds: list[int]) -> int:
    uid, gid = request["uid"], request["gid"]
    targets = [0, 1, 2, *request["fds"]]
    # Both ways dup2 in order: keep every source above every target.
    sources = [fd if fd > max(targets) else fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _HIGH_FD) for fd in fds]
    if request.get("confine") is not None:
        try:
            executable = request["executable"] or _which(request["argv"][0], request["env"].get("PATH", os.defpath))
            return confined.start(request, executable, list(zip(sources, targets, strict=True)), _DEFAULT_SIGNALS)
        finally:
            for source, fd in zip(sources, fds, strict=True):
                if source != fd:
                    os.close(source)
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


class _Server:
    """The spawner's state: what it started and what it cleans."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.children: dict[int, int | None] = {}
        """The processes the shim started, and the uid each runs as."""
        self.cleaners: dict[int, int] = {}
        """Cleaner processes, and the tag of the request each answers."""
        self.held: dict[int, list[tuple[int, dict[str, Any]]]] = {}
        """Clean requests waiting for the last child of their uid to be reaped."""
        self.metered: dict[int, tuple[list[str], int]] = {}
        """Confined children with a storage cap: their directories, and the cap in bytes."""
        self.due: dict[int, float] = {}
        """When each metered child's next measure starts (none while one runs)."""
        self.meters: dict[int, int] = {}
        """Meter processes, and the child whose directories each measures."""
        self.over: set[int] = set()
        """Children killed for what their directories hold: reported as killed by SIGXFSZ."""

    def say(self, *reply: str | int | tuple[int, str]) -> None:
        self.sock.sendall(marshal.dumps(reply))

    def handle(self, op: str, tag: int, request: dict[str, Any], fds: list[int]) -> None:
        try:
            if op == "spawn":
                _make_dirs(request["dirs"], request["uid"], request["gid"])
                pid = _start(request, fds)
                self.children[pid] = request["uid"]
                confine = request.get("confine")
                if confine is not None and confine["disk"] is not None:
                    self.metered[pid] = (confine["writable"], confine["disk"])
                    self.due[pid] = time.monotonic() + _METER_EVERY
                self.say("started", tag, pid)
            elif op == "prepare":
                _make_dirs(request["dirs"], request["uid"], request["gid"])
                self.say("done", tag, 0)
            elif op == "scope":
                landlock.scope_signals()
                self.say("done", tag, 0)
            elif op == "clean":
                if request["uid"] is not None and request["uid"] in self.children.values():
                    self.held.setdefault(request["uid"], []).append((tag, request))
                else:
                    self.clean(tag, request)
            else:
                raise ValueError(f"unknown request {op!r}")
        except (OSError, ValueError) as exc:
            code = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EINVAL
            detail = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.filename else str(exc)
            self.say("failed", tag, (code, detail))

    def clean(self, tag: int, request: dict[str, Any]) -> None:
        """Remove a sandbox's leftovers: here when they are few, else in a cleaner process."""
        uid, directory = request["uid"], request["directory"]
        places_left = uid is not None and bool(request["places"])
        directory_left = directory is not None and not (
            cleaning.remove_empty(directory) or cleaning.remove_path(directory, budget=_SMALL)
        )
        if not (places_left or directory_left):
            self.say("done", tag, 0)
            return
        try:
            pid = os.fork()
        except OSError as exc:
            self.say("failed", tag, (exc.errno or errno.EAGAIN, f"fork: {exc.strerror}"))
            return
        if pid == 0:  # the cleaner: it never returns to this loop
            code = 2
            try:
                self.sock.close()
                signal.set_wakeup_fd(-1)
                code = _cleaner(request, places_left)
            finally:
                os._exit(code)
        self.cleaners[pid] = tag

    def reap(self) -> None:
        """Reap every ended child. For each the shim started: kill everything left of its uid
        (:meth:`sweep`), then report its exit. For a cleaner: report its result. Adopted orphans
        are just reaped."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.children:
                uid = self.children.pop(pid)
                if uid is not None:
                    self.sweep(uid)
                if self.metered.pop(pid, None) is not None:
                    self.due.pop(pid, None)
                if pid in self.over:
                    self.over.discard(pid)
                    status = int(signal.SIGXFSZ)  # the wait status of a process killed by that signal
                self.say("exit", pid, status)
                if uid is not None and uid not in self.children.values():
                    for tag, request in self.held.pop(uid, []):
                        self.clean(tag, request)
            elif pid in self.cleaners:
                self.say("done", self.cleaners.pop(pid), os.waitstatus_to_exitcode(status))
            elif pid in self.meters:
                self.measured(self.meters.pop(pid), os.waitstatus_to_exitcode(status))

    def timeout(self) -> float | None:
        """Seconds until the next measure is due (None: none is)."""
        return max(0.0, min(self.due.values()) - time.monotonic()) if self.due else None

    def meter(self) -> None:
        """Start a meter process for each confined child whose measure is due: it walks the
        child's directories (never following a symlink) and exits 1 once they hold more than the
        cap. A process of its own, so that a tree of a million entries delays nothing here."""
        now = time.monotonic()
        for child, when in list(self.due.items()):
            if when > now:
                continue
            del self.due[child]
            folders, cap = self.metered[child]
            try:
                pid = os.fork()
            except OSError:
                self.due[child] = now + _METER_EVERY
                continue
            if pid == 0:  # the meter: it never returns to this loop
                code = 2
                try:
                    self.sock.close()
                    signal.set_wakeup_fd(-1)
                    os.nice(10)
                    code = 1 if confined.holds_more(folders, cap) else 0
                finally:
                    os._exit(code)
            self.meters[pid] = child

    def measured(self, child: int, code: int) -> None:
        """A meter ended: past the cap (1), kill the child's group (its uid is swept as it is
        reaped); otherwise measure again later."""
        if child not in self.children:
            return
        if code == 1:
            self.over.add(child)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child, signal.SIGKILL)
        else:
            self.due[child] = time.monotonic() + _METER_EVERY

    def sweep(self, uid: int) -> None:
        """SIGKILL every process of ``uid``; return once none of them is our child any more
        (bounded).

        Run as a sandbox's first process is reaped, before its exit is reported: so by the time
        the shim hears of it, nothing of the sandbox runs, and its uid may go to another sandbox.
        ``kill(-1)`` reaches every process the caller may signal: with ``uid`` as our real and
        effective uid (root stays the saved one, to come back to), exactly that uid's processes,
        wherever they moved (another session, another group, a double fork); once the spawner
        scoped its signals (the ``scope`` request), only those in its Landlock domain or below,
        which are the sandboxes' (without that, a host process of that uid dies too). The kernel holds
        off forks while it walks the process list, so none is missed. Those orphaned along the
        way are ours (we are their subreaper): we wait for them to die and reap them. ESRCH means
        it found no process at all (in a container whose pid 1 is the shim, none but us two).
        """
        os.setresuid(uid, uid, 0)
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        finally:
            os.setresuid(0, 0, 0)
        deadline = time.monotonic() + _SWEEP_WITHIN
        while True:
            # Orphans are not a sandbox's first process; a zombie's Uid still reads as it ran.
            left = [pid for pid in _adopted() if pid not in self.children and _uid_of(pid) == uid]
            if not left or time.monotonic() > deadline:
                return
            for pid in left:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            time.sleep(_SWEEP_PAUSE)

    def kill_all(self) -> None:
        """SIGKILL what we started (their groups) and what we adopted, and reap it all."""
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        while alive := _adopted():
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(-1, 0):
                    pass


def _cleaner(request: dict[str, Any], places_left: bool) -> int:
    """A cleaner process's work: 0 once nothing of the sandbox is left, 1 otherwise."""
    cleaning.raise_descriptor_limit()
    # Its own directory first, with our ids: its parent (the shim's temp root) is root's alone.
    ok = request["directory"] is None or cleaning.remove_path(request["directory"])
    uid, gid = request["uid"], request["gid"]
    if places_left:
        # For good: no way back to root, and only what the sandbox itself could remove.
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        ok = cleaning.clean_places(uid, request["places"]) and ok
    return 0 if ok else 1


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


def _become_subreaper() -> None:
    """Orphans of our children (a killed bwrap's namespace init, a daemon's leftovers) become
    ours rather than the container's init's, which may never reap them (the shim can be PID 1)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def serve(sock: socket.socket) -> None:
    """Answer requests on ``sock`` until its other end closes; then kill what is left."""
    server = _Server(sock)
    _become_subreaper()
    if os.geteuid() == 0:
        os.setgroups([])  # the children inherit no supplementary group
    # The children's too: what a sandbox writes (in /tmp as well) is its own uid's alone.
    os.umask(0o077)
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
            for key, _events in selector.select(server.timeout()):
                if key.fileobj is sock:
                    message, fds = _receive(sock)
                    if not message:
                        return
                    try:
                        op, tag, request = marshal.loads(message)  # noqa: S302 - the shim's end of a socketpair
                        server.handle(op, tag, request, fds)
                    finally:
                        for fd in fds:
                            os.close(fd)
                else:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_read, 4096)
                    server.reap()
            server.meter()
    finally:
        server.kill_all()


if __name__ == "__main__":
    connection = socket.socket(fileno=int(sys.argv[1]))
    connection.set_inheritable(False)
    serve(connection)
