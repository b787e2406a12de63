"""Confining a plain sandbox's processes without privileges: Landlock, ``no_new_privs`` and
resource limits. Standard library and :mod:`ctypes` only: the spawner
(:mod:`clrk_runtime.launching.spawn_server`) loads this file beside its own.

A plain sandbox is what runs where bubblewrap cannot (every pod: no user namespaces there). Its
processes get, between the spawner's ``fork`` and the ``exec`` (:func:`confine`), the same kind of
kernel confinement OpenAI's Codex CLI applies on Linux (Landlock plus ``no_new_privs``; Anthropic's
sandbox-runtime uses bubblewrap instead, as clrk's bubblewrap sandboxes do). Nothing here needs a
capability: Landlock asks only for ``no_new_privs``, and limits are only ever lowered.

* **Writes** (every write-type right the ABI knows: ``write_file``, ``remove_*``, ``make_*``,
  ``refer``, ``truncate``, ``ioctl_dev``) only beneath the sandbox's own directory (its HOME,
  TMPDIR, work dir and meta), plus ``write_file``/``truncate``/``ioctl_dev`` on ``/dev/null``,
  ``/dev/zero``, ``/dev/full`` and ``/dev/tty``. Reads and execution stay as they are.
* **TCP**: ``connect`` only to the egress gateway's port (none at all without a gateway), no
  ``bind``. Landlock rules name ports, not addresses: that port number is reachable on any
  address the pod can route to (in a cluster, the agent pods' NetworkPolicy admits only the
  gateway). UDP is not Landlock's, nor is a unix socket with a path (its file mode governs it).
* **Scopes**: no abstract unix socket and no signal reaches a process outside the sandbox's own
  domain (each sandbox gets a domain of its own: two sandboxes cannot signal each other either).
* ``PR_SET_NO_NEW_PRIVS``: a setuid or file-capability program runs with the caller's privileges.
* **Storage**: no mount is possible without privileges, so no filesystem of its own with a size.
  ``RLIMIT_FSIZE`` bounds each file, and the spawner measures the sandbox's directory off the
  shim's loop every half second and kills the sandbox past ``disk`` bytes (reported as killed by
  ``SIGXFSZ``, as a file over its limit is). A file unlinked while still open escapes the
  measure: at most ``open_files`` of them, each under the file size limit.
* **Limits** (soft and hard alike, so an agent cannot raise them; never above the hard limit the
  spawner has, which only ``CAP_SYS_RESOURCE`` could raise): file size (``RLIMIT_FSIZE``:
  a write past it fails with ``EFBIG`` after ``SIGXFSZ``, which kills by default), open files
  (``RLIMIT_NOFILE``), core dumps 0, and processes (``RLIMIT_NPROC``, threads included). The
  kernel counts ``RLIMIT_NPROC`` per real uid: it bounds a sandbox only when the sandbox has a
  host uid of its own (the shim is root), so it is set only then; with the shim's own uid it
  would count the shim's processes too.

Each piece exists from a given Landlock ABI on (:data:`PIECES`). On a kernel with less, or with
no Landlock at all, a sandbox gets what exists and :func:`missing` names the rest (the shim logs it
once and shows it in ``/readyz``). Below ABI 2 a rename or link between two directories is always
refused (the kernel's rule without ``refer``), even inside the sandbox's own directory.
"""

from __future__ import annotations

import ctypes
import os
import resource
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEVICES",
    "PIECES",
    "Confinement",
    "abi_in_use",
    "confine",
    "kernel_abi",
    "missing",
    "ruleset",
    "scope_signals",
]

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
"""The Landlock system calls (the same numbers on every architecture)."""
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2
_PR_SET_NO_NEW_PRIVS = 38

# Filesystem rights (include/uapi/linux/landlock.h), with the ABI each came in.
_WRITE_FILE = 1 << 1
_REMOVE_DIR, _REMOVE_FILE = 1 << 4, 1 << 5
_MAKE = (1 << 6) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12)
"""``make_char``, ``make_dir``, ``make_reg``, ``make_sock``, ``make_fifo``, ``make_block``, ``make_sym``."""
_REFER = 1 << 13  # ABI 2
_TRUNCATE = 1 << 14  # ABI 3
_IOCTL_DEV = 1 << 15  # ABI 5
_BIND_TCP, _CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6
_FILE_RIGHTS = _WRITE_FILE | _TRUNCATE | _IOCTL_DEV
"""The write-type rights that apply to a file that is not a directory."""

PIECES: tuple[tuple[str, int], ...] = (
    ("fs.write", 1),
    ("fs.refer", 2),
    ("fs.truncate", 3),
    ("net.tcp", 4),
    ("fs.ioctl_dev", 5),
    ("scope.abstract_unix_socket", 6),
    ("scope.signal", 6),
)
"""Each piece of a plain sandbox's Landlock domain, and the ABI it needs."""
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/tty")
"""Device files every sandbox may write (``2>/dev/null``); those missing here are skipped."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = (("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64))


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


class _NetPort(ctypes.Structure):
    _fields_ = (("allowed", ctypes.c_uint64), ("port", ctypes.c_uint64))


_libc: list[Any] = []
"""The C library, loaded on first use (a forked child inherits it)."""


def _lib() -> Any:
    if not _libc:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        _libc.append(libc)
    return _libc[0]


def _syscall(number: int, *args: Any) -> int:
    result: int = _lib().syscall(ctypes.c_long(number), *args)
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


@dataclass(frozen=True, slots=True)
class Confinement:
    """What one plain sandbox's first process (and so all of its processes) is held to."""

    abi: int
    """The Landlock ABI to use (0: none); see :func:`abi_in_use`."""
    writable: tuple[str, ...]
    """Directories beneath which every write-type right is granted (the sandbox's own)."""
    connect_ports: tuple[int, ...] = ()
    """TCP ports ``connect`` may reach (the egress gateway's); empty: none."""
    processes: int | None = None
    """``RLIMIT_NPROC`` (None: unchanged; only meaningful with a uid of the sandbox's own)."""
    file_size: int | None = None
    """``RLIMIT_FSIZE``, bytes (None: unchanged)."""
    open_files: int | None = None
    """``RLIMIT_NOFILE`` (None: unchanged)."""
    disk: int | None = None
    """Bytes the ``writable`` directories may hold together (None: no cap); measured by the
    spawner, which kills the sandbox past it (see :mod:`spawn_server`)."""

    def to_wire(self) -> dict[str, Any]:
        """A :mod:`marshal`-able form (the spawner's request)."""
        return {
            "abi": self.abi,
            "writable": list(self.writable),
            "connect_ports": list(self.connect_ports),
            "processes": self.processes,
            "file_size": self.file_size,
            "open_files": self.open_files,
            "disk": self.disk,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Confinement:
        return cls(
            abi=data["abi"],
            writable=tuple(data["writable"]),
            connect_ports=tuple(data["connect_ports"]),
            processes=data["processes"],
            file_size=data["file_size"],
            open_files=data["open_files"],
            disk=data["disk"],
        )


def kernel_abi() -> int:
    """The Landlock ABI this kernel offers; 0 without Landlock (not built, or not enabled)."""
    try:
        return _syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except OSError:
        return 0


def abi_in_use(cap: int | None, kernel: int) -> int:
    """The ABI sandboxes use: the kernel's, at most ``cap`` (a setting, for tests and rollouts)."""
    return kernel if cap is None else min(cap, kernel)


def missing(abi: int) -> list[str]:
    """The pieces of :data:`PIECES` a sandbox goes without at ``abi``."""
    return [name for name, needed in PIECES if needed > abi]


def _handled(abi: int) -> tuple[int, int, int]:
    """The filesystem rights, network rights and scopes a domain at ``abi`` restricts."""
    fs = _WRITE_FILE | _REMOVE_DIR | _REMOVE_FILE | _MAKE if abi >= 1 else 0
    fs |= (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0) | (_IOCTL_DEV if abi >= 5 else 0)
    net = _BIND_TCP | _CONNECT_TCP if abi >= 4 else 0
    scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0
    return fs, net, scoped


def ruleset(confinement: Confinement) -> int | None:
    """A Landlock ruleset descriptor for ``confinement`` (None at ABI 0), to hand to
    :func:`confine` in a child; the caller closes it. Built by the spawner before it forks, so
    that a refusal (a missing directory) is an error it can report."""
    if confinement.abi < 1:
        return None
    fs, net, scoped = _handled(confinement.abi)
    attr = _RulesetAttr(fs, net, scoped)
    fd = _syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0))
    try:
        for folder in confinement.writable:
            _allow_beneath(fd, folder, fs)
        for device in DEVICES:
            try:
                _allow_beneath(fd, device, fs & _FILE_RIGHTS)
            except FileNotFoundError:
                continue
        if net:
            for port in confinement.connect_ports:
                rule = _NetPort(_CONNECT_TCP, port)
                _syscall(
                    _ADD_RULE, ctypes.c_int(fd), ctypes.c_int(_RULE_NET_PORT), ctypes.byref(rule), ctypes.c_uint32(0)
                )
    except BaseException:
        os.close(fd)
        raise
    return fd


def _allow_beneath(ruleset_fd: int, path: str, rights: int) -> None:
    target = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        rule = _PathBeneath(rights, target)
        _syscall(
            _ADD_RULE,
            ctypes.c_int(ruleset_fd),
            ctypes.c_int(_RULE_PATH_BENEATH),
            ctypes.byref(rule),
            ctypes.c_uint32(0),
        )
    finally:
        os.close(target)


def confine(confinement: Confinement, ruleset_fd: int | None, uid: int | None, gid: int | None) -> None:
    """In a freshly forked child, before its exec: lower the limits, take ``uid``/``gid`` for good
    (None: keep ours), set ``no_new_privs``, enter the Landlock domain (``ruleset_fd`` from
    :func:`ruleset`)."""
    limits = [(resource.RLIMIT_CORE, 0)]
    if confinement.file_size is not None:
        limits.append((resource.RLIMIT_FSIZE, confinement.file_size))
    if confinement.open_files is not None:
        limits.append((resource.RLIMIT_NOFILE, confinement.open_files))
    if confinement.processes is not None and uid is not None:
        limits.append((resource.RLIMIT_NPROC, confinement.processes))
    for which, value in limits:
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)  # raising a hard limit needs CAP_SYS_RESOURCE, which a pod lacks
        resource.setrlimit(which, (value, value))
    if uid is not None and gid is not None:
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    _no_new_privs()
    if ruleset_fd is not None:
        _syscall(_RESTRICT_SELF, ctypes.c_int(ruleset_fd), ctypes.c_uint32(0))
        os.close(ruleset_fd)


def scope_signals() -> None:
    """Put the calling process (the spawner, once, before any child) in a Landlock domain that
    only scopes signals (ABI 6): it may still signal every process in its domain or below (its
    children, confined or not), and no other. With ``no_new_privs``, which Landlock needs
    without ``CAP_SYS_ADMIN`` (a pod has none); the spawner execs nothing itself, and its
    children get it anyway (plain: :func:`confine`; bubblewrap sets it)."""
    attr = _RulesetAttr(0, 0, _SCOPE_SIGNAL)
    fd = _syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0))
    try:
        _no_new_privs()
        _syscall(_RESTRICT_SELF, ctypes.c_int(fd), ctypes.c_uint32(0))
    finally:
        os.close(fd)


def _no_new_privs() -> None:
    if _lib().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(code)}")
