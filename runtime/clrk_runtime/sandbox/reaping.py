"""Killing what an agent left behind, for the plain backend (bubblewrap's pid namespace needs none).

The plain sandbox's stub leads its own session and process group: one ``killpg`` reaches every
process that kept the group. Only when something is still there (a background child outlived
the agent) or after a deadline (when a process may have moved to another group of the session)
is /proc scanned: a few milliseconds, so never on the common path.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

__all__ = ["group_exists", "kill_leftovers", "live_members"]

_GONE_WITHIN = 2.0
_GONE_PAUSE = 0.001
"""Killed processes die within microseconds; check again after this pause, for 2 s at most."""


def group_exists(pgid: int) -> bool:
    """Whether any process (zombies included) is left in group ``pgid``; each gets SIGKILL."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def live_members(ident: int, by_session: bool) -> list[int]:
    """Pids of live (not zombie) processes in group ``ident``, or in session ``ident``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp, session = stat.rpartition(")")[2].split()[:4]
        if state != "Z" and int(session if by_session else pgrp) == ident:
            found.append(int(entry))
    return found


def kill_leftovers(ident: int, by_session: bool) -> None:
    """SIGKILL the group's (or session's) live processes until none is left (2 s at most).

    Zombies do not count: killed orphans wait for init to reap them, which may take a while.
    """
    deadline = time.monotonic() + _GONE_WITHIN
    while (alive := live_members(ident, by_session)) and time.monotonic() < deadline:
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(_GONE_PAUSE)
