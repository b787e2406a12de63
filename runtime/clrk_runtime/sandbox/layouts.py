"""Command lines for the two sandbox kinds: pure functions, no I/O.

Every bubblewrap sandbox starts as a *stub*: ``sh -c`` inside the namespaces, waiting on a pipe
(``/dev/fd/N``). The invocation's environment and entrypoint arrive there as a short shell script
(see :func:`launch_script`), which ``exec``\\ s the entrypoint in exactly that environment: so a
warm sandbox costs one ``exec`` at invocation time. A cold bubblewrap sandbox is the very same
path started on demand. A plain sandbox needs no stub and no shell, warm or cold: the spawner
starts the entrypoint itself.

bubblewrap (``bwrap``) layout, as the agent sees it::

    /                 the host's root, read-only (plus ``binds``, read-only; when a bind's
                      DEST is missing on the host, the top-level entries one by one instead)
    /tmp              tmpfs (TMPDIR); hides the host's /tmp and the shim's own files
    /run/clrk/home    tmpfs (HOME)         /run/clrk/work   tmpfs (working dir)
    /run/clrk/meta    the one host dir it may write (response headers)
    /run/clrk/px.sock Unix socket to the shim's egress relay; socat serves it on 127.0.0.1:3128

with its own user, pid, ipc, uts, cgroup and network namespaces: the only way out is the socket.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "BWRAP_PATHS",
    "PROXY_PORT",
    "SandboxPaths",
    "bwrap_argv",
    "launch_script",
    "stub_script",
]


@dataclass(frozen=True, slots=True)
class SandboxPaths:
    """Where one sandbox's private directories are, as the agent sees them."""

    home: str
    tmp: str
    work: str
    response_headers: str
    proxy: str | None
    """``host:port`` the agent's proxy variables point at (None: no egress)."""


_MADE_HERE = frozenset({"proc", "dev", "tmp", "run"})
"""Top-level paths each sandbox gets fresh instead of the host's."""
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PROXY_PORT = 3128
"""Loopback port inside a bubblewrap sandbox where socat serves the egress relay."""
BWRAP_PATHS = {
    "home": "/run/clrk/home",
    "tmp": "/tmp",  # noqa: S108 - the sandbox's own private tmpfs
    "work": "/run/clrk/work",
    "meta": "/run/clrk/meta",
    "socket": "/run/clrk/px.sock",
}

_WAIT_FOR_PROXY = (
    # socat binds in a few milliseconds; the agent must not connect before. /proc/net/tcp is this
    # network namespace's: wait for 127.0.0.1:3128 (0100007F:0C38) in state LISTEN (0A). Shell
    # builtins only: a `grep` per round cost a fork and an exec, and many rounds under load.
    "proxy_ready() { while read -r _ addr _ st _; do "
    f'[ "$addr $st" = "0100007F:{PROXY_PORT:04X} 0A" ] && return 0; done </proc/net/tcp; return 1; }}\n'
    "until proxy_ready; do :; done"
)


def stub_script(control_fd: int, *, proxy_bridge: bool) -> str:
    """The stub's ``sh -c`` program: maybe start the proxy bridge, then run the control pipe's.

    (dash cannot name descriptors above 9, so the drained pipe stays open in the agent: it holds
    nothing and its writer is closed.)
    """
    run = f". /dev/fd/{control_fd}"
    if not proxy_bridge:
        return run
    # nodelay: without it Nagle's algorithm holds each small write of a streamed answer back until
    # the client's (delayed) ACK of the last one: 40-100 ms per model answer, measured.
    listen = f"TCP-LISTEN:{PROXY_PORT},bind=127.0.0.1,fork,reuseaddr,nodelay"
    socat = f"socat {listen} UNIX-CONNECT:{BWRAP_PATHS['socket']} </dev/null &"
    return f"{socat}\n{_WAIT_FOR_PROXY}\n{run}"


def launch_script(env: Mapping[str, str], command: Sequence[str], workdir: str) -> bytes:
    """What the stub reads from its control pipe: go to ``workdir``, exec ``command`` in ``env``.

    The stub starts with ``PATH`` alone, so exporting the rest and forgetting what ``cd`` set
    leaves exactly ``env``, and saves the ``env -i`` exec (a measurable share of a warm
    invocation). Names a shell cannot export (Kubernetes allows ``-`` and ``.``) take the
    ``env -i`` path. Every value is shell-quoted.
    """
    quoted = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
    argv = " ".join(shlex.quote(arg) for arg in command)
    lines = [f"cd {shlex.quote(workdir)} || exit 126"]
    if "PATH" in env and all(_NAME.fullmatch(name) for name in env):
        lines += ["unset OLDPWD PWD", f"export {quoted}", f"exec {argv}"]
    else:
        lines += [f"exec env -i {quoted} {argv}"]
    return ("\n".join(lines) + "\n").encode()


def bwrap_argv(
    *,
    stub: str,
    meta_dir: str,
    hide: Sequence[str],
    binds: Sequence[str],
    relay_socket: str | None,
    uid: int,
    gid: int,
    path: str,
    root_entries: Sequence[tuple[str, str | None]] | None,
    shadows: Sequence[tuple[str, Sequence[tuple[str, str | None]]]] = (),
    info_fd: int | None = None,
) -> list[str]:
    """The ``bwrap`` command line for one sandbox (see the module docstring for the layout).

    ``hide`` are host paths covered with an empty tmpfs (the shim's temp root); ``binds`` are
    ``SRC:DEST`` pairs mounted read-only. ``shadows`` are host folders rebuilt on a tmpfs from
    their entries, so that a bind may add a file the host's folder lacks
    (``COPY agent.sh /usr/local/bin/``); they are made read-only again after the binds.
    """
    # With ``root_entries``: the host's top-level entries one by one (symlinks as symlinks) on
    # bwrap's own tmpfs root, remounted read-only at the end: unlike `--ro-bind / /`, this lets a
    # bind's DEST be a path the host lacks (`COPY agent.sh /app/` binds at /app/agent.sh). Without
    # (every DEST exists): the host's root in one bind, a quarter cheaper to set up per sandbox.
    argv = ["bwrap"]
    if root_entries is None:
        argv += ["--ro-bind", "/", "/"]
    for name, target in root_entries or ():
        if name in _MADE_HERE:
            continue
        if target is None:
            argv += ["--ro-bind", f"/{name}", f"/{name}"]
        else:
            argv += ["--symlink", target, f"/{name}"]
    for path_to_hide in hide:
        argv += ["--tmpfs", path_to_hide]
    argv += ["--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev"]  # noqa: S108 - a fresh tmpfs
    argv += ["--tmpfs", "/run", "--dir", "/run/clrk"]
    argv += ["--dir", BWRAP_PATHS["home"], "--dir", BWRAP_PATHS["work"]]
    argv += ["--bind", meta_dir, BWRAP_PATHS["meta"]]
    if relay_socket is not None:
        argv += ["--bind", relay_socket, BWRAP_PATHS["socket"]]
    for folder, entries in shadows:
        argv += ["--tmpfs", folder]
        for name, target in entries:
            entry = f"{folder}/{name}"
            argv += ["--symlink", target, entry] if target is not None else ["--ro-bind", entry, entry]
    # After the tmpfs mounts, so that a DEST may also lie under /tmp or /run.
    for pair in binds:
        src, sep, dest = pair.partition(":")
        if not sep or not src or not dest:
            raise ValueError(f"a bind must be SRC:DEST, got {pair!r}")
        argv += ["--ro-bind", src, dest]
    # No --new-session: the outer bwrap already leads its own session without a terminal, and
    # keeping the namespace's init in its process group lets one killpg reach it.
    argv += ["--unshare-all", "--die-with-parent"]
    argv += ["--uid", str(uid), "--gid", str(gid)]
    argv += ["--remount-ro", "/"]
    for folder, _ in shadows:
        argv += ["--remount-ro", folder]
    argv += ["--clearenv", "--setenv", "PATH", path, "--chdir", BWRAP_PATHS["work"]]
    if info_fd is not None:
        argv += ["--info-fd", str(info_fd)]  # tells the namespace init's pid, see sandboxes.py
    return [*argv, "--", "sh", "-c", stub]
