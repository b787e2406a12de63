"""A plain sandbox's first process, started confined, and the measure of what its directories hold.

Standard library only, loaded by the spawner (:mod:`spawn_server`, the file beside this one) as
:mod:`cleaning` and :mod:`landlock` are. A confined start is a ``fork`` and an ``exec``, with
:func:`landlock.confine` in between (``posix_spawn`` runs no code in the child); its cost is in
:mod:`spawn_server`'s docstring. :func:`holds_more` is what the spawner's meter processes run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
from typing import Any

if __package__:
    from clrk_runtime.launching import landlock
else:  # loaded by spawn_server.py run as a file
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))
    import landlock  # type: ignore[import-not-found,no-redef]

__all__ = ["holds_more", "start"]


def start(
    request: dict[str, Any], executable: str, moves: list[tuple[int, int]], default_signals: tuple[signal.Signals, ...]
) -> int:
    """Start a plain sandbox's process confined (:func:`landlock.confine`): a ``fork``, since
    code must run between it and the ``exec``. A failure in the child before its ``exec`` comes
    back through a close-on-exec pipe and is raised here, as ``posix_spawn`` would."""
    confinement = landlock.Confinement.from_wire(request["confine"])
    ruleset = landlock.ruleset(confinement)
    report_read, report_write = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
        if pid == 0:  # the child: it never returns to this loop
            try:
                os.close(report_read)
                _child(request, confinement, ruleset, moves, executable, default_signals)
            except BaseException as exc:
                code = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EINVAL
                detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                with contextlib.suppress(OSError):
                    os.write(report_write, f"{code}:{detail}".encode(errors="replace"))
            finally:
                os._exit(127)
    finally:
        if ruleset is not None:
            os.close(ruleset)
        os.close(report_write)
    try:
        report = b""
        while chunk := os.read(report_read, 4096):  # EOF at the exec: milliseconds at most
            report += chunk
    finally:
        os.close(report_read)
    if report:
        os.waitpid(pid, 0)
        number, _, detail = report.decode(errors="replace").partition(":")
        raise OSError(int(number), detail, executable)
    return pid


def _child(
    request: dict[str, Any],
    confinement: landlock.Confinement,
    ruleset: int | None,
    moves: list[tuple[int, int]],
    executable: str,
    default_signals: tuple[signal.Signals, ...],
) -> None:
    """What a confined child does between ``fork`` and ``exec``."""
    signal.set_wakeup_fd(-1)
    for number in default_signals:
        signal.signal(number, signal.SIG_DFL)
    os.setsid()
    for source, target in moves:
        os.dup2(source, target)
    os.chdir(request["cwd"])
    landlock.confine(confinement, ruleset, request["uid"], request["gid"])
    os.execve(executable, request["argv"], request["env"])  # noqa: S606 - the agent's own argv, as posix_spawn's


def holds_more(folders: list[str], cap: int) -> bool:
    """Whether the trees at ``folders`` take more than ``cap`` bytes (blocks allocated, each
    entry counted, no symlink followed; a folder swapped for a symlink meanwhile is not entered)."""
    total = 0
    for folder in folders:
        for _top, directories, files, top_fd in os.fwalk(folder, follow_symlinks=False):
            for name in directories + files:
                with contextlib.suppress(OSError):
                    total += os.stat(name, dir_fd=top_fd, follow_symlinks=False).st_blocks * 512
            if total > cap:
                return True
    return False
