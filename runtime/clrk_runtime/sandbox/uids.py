"""The host uids sandboxes run as when the shim is root: one of its own for each live sandbox.

A uid of its own means a sandbox cannot signal, trace or read the processes and files of another
(the plain backend has no other wall between them), and that everything it started, daemons
that left its session included, can be found and killed by uid (see the spawner's ``_sweep``).
A uid goes back to the end of the free list only once nothing of its sandbox is left (processes
killed, files removed, in the shared places too), so it is reused as late as possible and only on
a clean slate; one whose leftovers could not all be removed is never given back (its lock stays
held until the shim stops).

Every shim on a host draws from the same range by default (several agents in one ``clrk dev``,
or two ``clrk dev`` at once), so a uid is held with a lock on a file named after it: a uid
another shim holds is skipped, and a shim that dies lets go of its uids with its descriptors.
"""

from __future__ import annotations

import fcntl
import os
from collections import deque
from pathlib import Path

__all__ = ["HostIds", "NoFreeId"]


class NoFreeId(RuntimeError):
    """Every uid of the range is held by a live sandbox."""


class HostIds:
    def __init__(self, first: int, count: int, lock_dir: Path) -> None:
        self.first = first
        self.count = count
        self._lock_dir = lock_dir
        lock_dir.mkdir(mode=0o700, exist_ok=True)
        info = lock_dir.lstat()
        if info.st_uid != os.geteuid() or info.st_mode & 0o077 or not lock_dir.is_dir():
            raise PermissionError(f"{lock_dir} must be a directory of ours that no one else can write")
        self._free = deque(range(first, first + count))
        self._held: dict[int, int] = {}
        """uid → the descriptor holding its lock."""

    def take(self) -> int:
        for _ in range(len(self._free)):
            uid = self._free.popleft()
            if self._lock(uid):
                return uid
            self._free.append(uid)  # another shim's sandbox has it
        last = self.first + self.count - 1
        raise NoFreeId(f"all {self.count} sandbox uids ({self.first}-{last}) are in use; raise sandbox_uids")

    def claim(self, uid: int) -> bool:
        """Take ``uid`` itself, if it is free here and no other shim holds it (to clean up after
        a shim that died with sandboxes of that uid); :meth:`give_back` it afterwards."""
        if uid not in self._free or not self._lock(uid):
            return False
        self._free.remove(uid)
        return True

    def _lock(self, uid: int) -> bool:
        fd = os.open(self._lock_dir / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._held[uid] = fd
        return True

    def give_back(self, uid: int) -> None:
        fd = self._held.pop(uid, None)
        if fd is not None:
            os.close(fd)  # releases the lock
        self._free.append(uid)

    def close(self) -> None:
        """Let go of every uid still held (the shim is stopping)."""
        for fd in self._held.values():
            os.close(fd)
        self._held.clear()
