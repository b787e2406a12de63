"""One sandbox's life on the host: make it, hand it an invocation, kill it, remove it.

A bubblewrap :class:`Sandbox` is a stub process (see :mod:`clrk_runtime.sandbox.layouts`) plus its
private host directory. A plain sandbox runs no process before its invocation and needs no shell:
a warm one is its directories made and its uid held ahead of time, and the spawner starts the
agent itself when the invocation comes (a cold one makes its directories then too). Every process
is started by the spawner (:mod:`clrk_runtime.launching.spawner`). Killing is always of the whole
tree: for bubblewrap the pid namespace dies with its init (``--die-with-parent``); with a host
uid of its own (the shim is root) every process of that uid is killed when the first one is
reaped; otherwise the process group gets SIGKILL (and, after a deadline, every process left in
the sandbox's session).

Removing is the spawner's job too, off the shim's loop (:meth:`Spawner.clean
<clrk_runtime.launching.spawner.Spawner.clean>`): the sandbox's directory, never following a
symlink an agent planted, and, for a plain sandbox with a uid of its own, everything that uid
made in the shared places (``/tmp``, ``/var/tmp``, ``/dev/shm`` … see
:mod:`clrk_runtime.sandbox.places`), removed as that uid. The uid serves another sandbox only
once all of it is gone; otherwise it is set aside (never reused by this shim).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import shutil
import signal
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from clrk_runtime.launching import cleaning
from clrk_runtime.launching.landlock import Confinement
from clrk_runtime.launching.pipes import Output
from clrk_runtime.launching.spawner import Child, Launch, Spawner, SpawnerGone, ended, start_child
from clrk_runtime.sandbox.identities import IdentityRelay
from clrk_runtime.sandbox.layouts import BWRAP_PATHS, PROXY_PORT, SandboxPaths, bwrap_argv, launch_script, stub_script
from clrk_runtime.sandbox.reading import HEADERS_CAP, read_agent_file
from clrk_runtime.sandbox.reaping import group_exists, kill_leftovers
from clrk_runtime.sandbox.uids import HostIds
from clrk_runtime.settings import RuntimeSettings

__all__ = ["Sandbox", "SandboxKind", "SandboxSpec", "create_sandbox"]

SandboxKind = Literal["bwrap", "plain"]
_log = logging.getLogger(__name__)
NOBODY = 65534
"""The uid and gid an agent sees inside bubblewrap, whatever its host uid."""
_CHILD_PID = re.compile(rb'"child-pid"\s*:\s*(\d+)')
_GONE_WITHIN = 2.0
"""Seconds a killed namespace may take to go."""
_READY_FD_BWRAP = 5
"""The readiness descriptor's number in a warm-started bubblewrap sandbox (3 and 4 are the stub's)."""
_READY_FD_PLAIN = 3


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """What every sandbox of one runtime shares."""

    kind: SandboxKind
    settings: RuntimeSettings
    root: Path
    """The shim's private temp root (mode 0711); each sandbox gets one directory in it."""
    relay_socket: Path | None
    """Unix socket bridged to the egress proxy (bubblewrap only)."""
    drop_privileges: bool
    """Run as ``settings.sandbox_uid`` (the shim is root)."""
    spawner: Spawner
    """Starts every sandbox's first process (the shim's loop never forks)."""
    ids: HostIds | None = None
    """The uids sandboxes run as, one each (when ``drop_privileges``)."""
    places: tuple[str, ...] = ()
    """Shared places a plain sandbox's uid may write to, cleaned of it at close (when ``ids``)."""
    landlock_abi: int = 0
    """The Landlock ABI plain sandboxes are confined with (the kernel's, capped by
    ``settings.landlock_abi``; 0: none): see :func:`_plain_confinement`."""
    identities: IdentityRelay | None = None
    """With warm start: the relay every sandbox's egress goes through, under the credentials it
    was enrolled with (:mod:`~clrk_runtime.sandbox.identities`); plain sandboxes then dial its
    loopback port instead of the gateway's, bubblewrap ones its socket (``relay_socket``)."""


@dataclass(eq=False)
class Sandbox:
    spec: SandboxSpec
    process: Child | None
    """None for a cold plain sandbox until :meth:`launch` starts the agent itself."""
    directory: str
    """The sandbox's host directory (plain strings here: pathlib showed up in profiles)."""
    control: int
    """Write end of the stub's control pipe; closed once the invocation's script is sent."""
    paths: SandboxPaths
    warm: bool = False
    info: int = -1
    """bubblewrap only: read end of ``--info-fd``, where bwrap writes the namespace init's pid."""
    uid: int | None = None
    """The host uid (and gid) this sandbox alone runs as, when the shim is root."""
    prepared: bool = False
    """Plain only: its directories exist already (a warm sandbox)."""
    ready_fd: int | None = None
    """Made to start ahead (warm start): the descriptor number its agent writes a line to once
    ready (``$CLRK_READY_FD``); :attr:`ready` reads the other end."""
    ready: Output | None = None
    """The read end of the readiness pipe, on the event loop (closed with the sandbox)."""
    credentials: tuple[str, str] | None = None
    """Its proxy user and password at the identity relay (``spec.identities``), once enrolled."""
    started_ahead: bool = False
    """Its agent was launched before its request (see :meth:`launch`)."""
    _ready_write: int = field(default=-1, repr=False)
    """Plain only: the readiness pipe's write end, handed to the agent at :meth:`launch`."""
    _launched: bool = field(default=False, repr=False)
    _noted: dict[str, int | None] = field(default_factory=dict, repr=False)
    """The shared places' modification times before the agent started (see :meth:`_remove`)."""
    _closed: bool = field(default=False, repr=False)

    @property
    def kind(self) -> SandboxKind:
        return self.spec.kind

    @property
    def response_headers_file(self) -> str:
        """Where ``$CLRK_METADATA_RESPONSE_HEADERS`` lands on the host: a path the agent controls,
        never opened by it (see :meth:`read_response_headers`)."""
        return f"{self.directory}/meta/headers"

    async def read_response_headers(self) -> str:
        """What the agent wrote into ``$CLRK_METADATA_RESPONSE_HEADERS`` ("" if nothing).

        Read in a thread, relative to the sandbox's directory and never through a symlink, a FIFO
        or anything but a regular file of the sandbox's uid of at most
        :data:`~clrk_runtime.sandbox.reading.HEADERS_CAP` bytes (see
        :mod:`clrk_runtime.sandbox.reading`); anything else raises
        :class:`~clrk_runtime.sandbox.reading.RefusedFile`.
        """
        data = await asyncio.to_thread(read_agent_file, self.directory, ("meta", "headers"), self.uid, HEADERS_CAP)
        return "" if data is None else data.decode("utf-8", "replace")

    async def launch(self, env: Mapping[str, str], command: Sequence[str]) -> Child:
        """Run ``command`` in exactly ``env``, in the work dir; the agent's process.

        A waiting bubblewrap stub gets it as a script (see
        :func:`~clrk_runtime.sandbox.layouts.launch_script`; a pipe write well under PIPE_BUF: it
        does not block). A plain sandbox has no stub: the spawner starts the agent itself (and
        makes its dirs, unless a warm sandbox has them already). A program that cannot be started
        raises :class:`OSError` (a shell would have exited 127 or 126).
        """
        if self.process is None:
            self._launched = True
            self._noted = cleaning.note_places(list(self._places()))
            try:
                self.process = await start_child(self.spec.spawner, self._direct(env, command))
            finally:
                self._close_ready_write()
            return self.process
        try:
            os.write(self.control, launch_script(env, command, self.paths.work))
        except BrokenPipeError:
            pass  # the stub died while waiting: the run ends at once and reports its exit code
        finally:
            self._close_control()
        return self.process

    def _direct(self, env: Mapping[str, str], command: Sequence[str]) -> Launch:
        ready = self._ready_write >= 0
        return Launch(
            argv=command,
            env=env,
            cwd=self.paths.work,
            executable=None,  # looked up on the env's PATH, as exec would
            dirs=() if self.prepared else _plain_dirs(self.directory),
            fds=(_READY_FD_PLAIN,) if ready else (),
            extra=(self._ready_write,) if ready else (),
            uid=self.uid,
            gid=self.uid,
            confinement=_plain_confinement(self.spec, self.directory, own_uid=self.uid is not None),
        )

    def _places(self) -> tuple[str, ...]:
        """The shared places to clean of this sandbox's uid (plain, with a uid of its own)."""
        return self.spec.places if self.kind == "plain" and self.uid is not None else ()

    def kill(self) -> None:
        """SIGKILL the sandbox's process group; safe to call more than once, or after it ended.

        For bubblewrap that is the outer bwrap and the pid namespace's init, whose death takes
        every process in the namespace with it: nothing can escape. For the plain backend it is
        every process that kept the agent's group; see :meth:`close` for those that left it.
        """
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    async def close(self, *, sweep_session: bool = False) -> None:
        """Kill what is left, reap the first process, remove what it made: nothing stays behind.

        bubblewrap: returns once the pid namespace is gone. With a uid of its own (the shim is
        root), every other process of that uid was killed before the spawner reported the first
        one's exit, wherever it went (see the spawner's ``sweep``), and a plain sandbox's files
        in the shared places are removed with its directory. Plain without (the shim is not
        root): every process left in its group, and with ``sweep_session`` (used after a
        deadline) in its session, found by a scan of /proc; a daemon that called ``setsid()``
        escapes that, and the shared places, which the shim's own uid shares, are left alone.
        """
        if self._closed:
            return
        self._closed = True
        self._close_control()
        self._close_ready_write()
        if self.credentials is not None and self.spec.identities is not None:
            self.spec.identities.forget(self.credentials[0])
        self.kill()
        if self.process is not None:
            await self._end(self.process, sweep_session)
        if self.ready is not None:
            self.ready.close()
        clean = await self._remove()
        if self.uid is not None and self.spec.ids is not None:
            if clean:
                self.spec.ids.give_back(self.uid)
            else:
                _log.warning("sandbox uid %s set aside: what its sandbox left could not all be removed", self.uid)
            self.uid = None

    async def _remove(self) -> bool:
        """Remove the directory, and the uid's files in the shared places; True once nothing is
        left.

        Only the places a process of this sandbox may have written to are scanned: none if none
        ever ran, and none whose modification time has not moved since just before it started
        (nothing was added at their top meanwhile). With none to scan, and every process of the
        sandbox gone, a directory holding only empty folders (an agent that wrote nothing) is
        removed right here, with a few ``rmdir`` that cannot follow a symlink. Anything else is
        the spawner's (:meth:`Spawner.clean <clrk_runtime.launching.spawner.Spawner.clean>`).
        """
        places = list(self._places()) if self._launched else []
        if places and cleaning.untouched(self._noted, places):
            places = []
        gone = self.process is not None or not self._launched  # else a cancelled start may still run
        if not places and gone and cleaning.remove_empty(self.directory):
            return True
        try:
            return await self.spec.spawner.clean(self.directory, self.uid, self.uid, places)
        except (OSError, SpawnerGone) as exc:
            _log.warning("sandbox %s: the spawner could not clean up (%s); removing its directory", self.directory, exc)
            await asyncio.to_thread(shutil.rmtree, self.directory, True)  # fd-based: no symlink followed
            return False

    async def _end(self, process: Child, sweep_session: bool) -> None:
        await process.wait()
        process.close_pipes()
        if self.kind == "bwrap":
            await self._namespace_gone()
        elif self.uid is None:
            pid = process.pid
            if sweep_session or group_exists(pid):
                # Rare (a background child outlived the agent): scan /proc, off the event loop.
                await asyncio.to_thread(kill_leftovers, pid, sweep_session)

    async def _namespace_gone(self) -> None:
        """Wait until the pid namespace's init has ended: by then every process in it has.

        The outer bwrap reports the agent's exit before its init has finished tearing the
        namespace down; the init (in our process group, SIGKILLed above, and with
        ``--die-with-parent``) is watched through a pidfd, as a zombie it no longer counts.
        """
        try:
            info = os.read(self.info, 4096) if self.info >= 0 else b""
        except BlockingIOError:
            info = b""  # bwrap died before telling: its init, if any, has PDEATHSIG
        finally:
            if self.info >= 0:
                os.close(self.info)
                self.info = -1
        match = _CHILD_PID.search(info)
        if match is not None:
            try:
                async with asyncio.timeout(_GONE_WITHIN):
                    await ended(int(match.group(1)))
            except TimeoutError:
                _log.warning("sandbox %s: namespace init still alive after SIGKILL", self.directory)

    def _close_control(self) -> None:
        if self.control >= 0:
            os.close(self.control)
            self.control = -1

    def _close_ready_write(self) -> None:
        if self._ready_write >= 0:
            os.close(self._ready_write)
            self._ready_write = -1


def _entries(folder: str) -> tuple[tuple[str, str | None], ...]:
    """Each name in ``folder``, with its target when it is a symlink."""
    entries = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        entries.append((name, os.readlink(path) if os.path.islink(path) else None))
    return tuple(entries)


@functools.cache
def _root_entries() -> tuple[tuple[str, str | None], ...]:
    """The host's ``/`` (listed once)."""
    return _entries("/")


@functools.cache
def _needs_own_root(binds: tuple[str, ...]) -> bool:
    """Whether a bind's DEST is missing on the host, so that bwrap must create its mount point
    (impossible under a read-only bind of the host's ``/``)."""
    return any(not os.path.lexists(pair.partition(":")[2]) for pair in binds)


_PRIVATE_TOPS = ("/tmp", "/run")  # noqa: S108 - each sandbox gets its own tmpfs here


@functools.cache
def _exposed(entrypoint: tuple[str, ...], path: str, shim_root: str) -> tuple[str, ...]:
    """Read-only binds that keep the agent's own program and tools visible when they live
    under ``/tmp`` or ``/run``, which every sandbox replaces with its own tmpfs (a checkout or a
    virtualenv in /tmp, as in CI). The folder right below ``/tmp`` holding each is bound back;
    the shim's own temp root never is.
    """
    wanted = []
    for place in [*entrypoint, *path.split(os.pathsep)]:
        if not place.startswith("/"):
            continue
        for candidate in {place, os.path.realpath(place)}:
            for top in _PRIVATE_TOPS:
                rest = candidate[len(top) + 1 :].split("/", 1)[0] if candidate.startswith(top + "/") else ""
                folder = f"{top}/{rest}"
                if rest and os.path.isdir(folder) and not shim_root.startswith(folder):
                    wanted.append(f"{folder}:{folder}")
    return tuple(dict.fromkeys(wanted))


@functools.cache
def _shadows(binds: tuple[str, ...]) -> tuple[tuple[str, tuple[tuple[str, str | None], ...]], ...]:
    """Host folders to rebuild on a tmpfs so that a bind can create its mount point there.

    A bind's DEST that the host lacks needs a writable parent: the deepest folder of DEST that
    the host has (below ``/``, which is already bwrap's own tmpfs) is rebuilt from its entries,
    one bind each. Listed once per set of binds.
    """
    folders = set()
    for pair in binds:
        dest = os.path.normpath(pair.partition(":")[2])
        if not dest.startswith("/") or os.path.lexists(dest):
            continue
        parent = os.path.dirname(dest)
        while parent != "/" and not os.path.isdir(parent):
            parent = os.path.dirname(parent)
        top = parent.split("/")[1] if parent != "/" else ""
        if parent != "/" and top not in {"tmp", "run", "proc", "dev"}:
            folders.add(parent)
    return tuple((folder, _entries(folder)) for folder in sorted(folders, key=lambda f: (f.count("/"), f)))


def _plain_proxy(spec: SandboxSpec) -> str | None:
    """``host:port`` a plain sandbox's agent dials: the identity relay's, else the gateway's."""
    if spec.identities is not None:
        return spec.identities.address
    return spec.settings.egress_proxy


def _plain_paths(directory: str, spec: SandboxSpec) -> SandboxPaths:
    return SandboxPaths(
        home=f"{directory}/home",
        tmp=f"{directory}/tmp",  # noqa: S108 - the sandbox's private dir
        work=f"{directory}/work",
        response_headers=f"{directory}/meta/headers",
        proxy=_plain_proxy(spec),
    )


@functools.cache
def _program(name: str, path: str) -> str:
    """``name``'s full path on ``path`` (the spawner execs without a PATH search)."""
    found = shutil.which(name, path=path)
    if found is None:
        raise FileNotFoundError(f"{name} is not on the sandbox's PATH ({path})")
    return found


def _plain_confinement(spec: SandboxSpec, directory: str, *, own_uid: bool) -> Confinement:
    """What a plain sandbox's processes are held to: writes only beneath ``directory`` (its
    HOME, TMPDIR, work dir and meta), TCP connect only to the egress gateway's port, its own
    signals and abstract sockets, ``no_new_privs`` and the limits of ``spec.settings`` (the
    process count only with a uid of its own, ``own_uid``: the kernel counts per uid)."""
    settings = spec.settings
    proxy = _plain_proxy(spec)
    port = proxy.rpartition(":")[2] if proxy else ""
    return Confinement(
        abi=spec.landlock_abi,
        writable=(directory,),
        connect_ports=(int(port),) if port.isdigit() else (),
        processes=settings.sandbox_processes if own_uid else None,
        file_size=settings.sandbox_file_size,
        open_files=settings.sandbox_open_files,
        disk=settings.sandbox_disk,
    )


def _plain_dirs(directory: str) -> tuple[str, ...]:
    return (directory, *(f"{directory}/{name}" for name in ("home", "tmp", "work", "meta")))


async def create_sandbox(spec: SandboxSpec, *, warm: bool = False, ahead: bool = False) -> Sandbox:
    """A sandbox for one invocation, its uid taken.

    bubblewrap: the spawner makes its directory and starts its stub, which execs the invocation
    handed over by :meth:`Sandbox.launch`. Plain: warm, the spawner makes its directories now;
    cold (made for the invocation at hand), nothing more happens here. Either way
    :meth:`Sandbox.launch` starts the agent itself. ``ahead`` (warm start): a readiness pipe is
    made too, its write end the agent's descriptor :attr:`Sandbox.ready_fd`.
    """
    directory = f"{spec.root}/{uuid.uuid4().hex}"
    uid = spec.ids.take() if spec.ids is not None else None
    ready_read, ready_write = os.pipe2(os.O_CLOEXEC) if ahead else (-1, -1)
    try:
        if spec.kind == "bwrap":
            given, ready_write = ready_write, -1  # closed there, once the stub holds it
            sandbox = await _bwrap_sandbox(spec, directory, uid, warm, given)
        else:
            sandbox = await _plain_sandbox(spec, directory, uid, warm)
    except BaseException:
        for fd in (ready_read, ready_write):
            if fd >= 0:
                os.close(fd)
        raise
    if ahead:
        sandbox.ready = Output(ready_read)
        sandbox.ready_fd = _READY_FD_BWRAP if spec.kind == "bwrap" else _READY_FD_PLAIN
        sandbox._ready_write = ready_write
    return sandbox


async def _plain_sandbox(spec: SandboxSpec, directory: str, uid: int | None, warm: bool) -> Sandbox:
    paths = _plain_paths(directory, spec)
    if warm:
        try:
            await spec.spawner.prepare(_plain_dirs(directory), uid, uid)
        except BaseException:
            # Nothing runs as uid. A cancelled request is still carried out (at shutdown: the
            # spawner makes the dirs before it sees its socket close, and the temp root goes).
            await _undo(spec, directory, uid, free=True)
            raise
    return Sandbox(spec, None, directory, -1, paths, warm=warm, uid=uid, prepared=warm)


async def _undo(spec: SandboxSpec, directory: str, uid: int | None, *, free: bool) -> None:
    """Remove a sandbox that could not be made; give its uid back if ``free`` (nothing can run
    as it), else set it aside."""
    await asyncio.to_thread(shutil.rmtree, directory, True)  # nothing ran in it: only our own dirs
    if uid is not None and spec.ids is not None:
        if free:
            spec.ids.give_back(uid)
        else:
            _log.warning("sandbox uid %s set aside: its sandbox may have started", uid)


async def _bwrap_sandbox(spec: SandboxSpec, directory: str, uid: int | None, warm: bool, ready: int) -> Sandbox:
    settings = spec.settings
    control_read, control = os.pipe()
    info_read, info_write = os.pipe()
    if uid is not None:
        os.fchown(control_read, uid, uid)  # the stub reopens it
    bridge = spec.relay_socket is not None
    argv = bwrap_argv(
        stub=stub_script(3, proxy_bridge=bridge),
        meta_dir=f"{directory}/meta",
        hide=[str(spec.root)],
        binds=[*settings.binds, *_exposed(tuple(settings.command[:1]), settings.agent_path, str(spec.root))],
        relay_socket=str(spec.relay_socket) if bridge else None,
        uid=NOBODY,
        gid=NOBODY,
        path=settings.agent_path,
        root_entries=_root_entries() if _needs_own_root(tuple(settings.binds)) else None,
        shadows=_shadows(tuple(settings.binds)),
        info_fd=4,
    )
    paths = SandboxPaths(
        home=BWRAP_PATHS["home"],
        tmp=BWRAP_PATHS["tmp"],
        work=BWRAP_PATHS["work"],
        response_headers=BWRAP_PATHS["meta"] + "/headers",
        proxy=f"127.0.0.1:{PROXY_PORT}" if bridge else None,
    )
    launch = Launch(
        cwd=directory,
        argv=argv,
        executable=_program(argv[0], settings.agent_path),
        env={"PATH": settings.agent_path},
        dirs=(directory, f"{directory}/meta"),
        fds=(3, 4, _READY_FD_BWRAP) if ready >= 0 else (3, 4),
        extra=(control_read, info_write, ready) if ready >= 0 else (control_read, info_write),
        uid=uid,
        gid=uid,
    )
    try:
        process = await start_child(spec.spawner, launch)
    except BaseException as exc:
        os.close(control)
        os.close(info_read)
        # The spawner refused (OSError): nothing runs as uid. Cancelled, or the spawner died: the
        # stub may have started all the same, and its uid is free only once its exit was
        # reported. Rare, and the range holds thousands: set it aside.
        await _undo(spec, directory, uid, free=isinstance(exc, OSError))
        raise
    finally:
        os.close(control_read)
        os.close(info_write)
        if ready >= 0:
            os.close(ready)
    os.set_blocking(info_read, False)
    return Sandbox(spec, process, directory, control, paths, warm=warm, info=info_read, uid=uid)
