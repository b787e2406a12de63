"""The host uids sandboxes run as when the shim is root: one of its own for each live sandbox.

A uid of its own means a sandbox cannot signal, trace or read the processes and files of another
(the plain backend has no other wall between them), and that everything it started, daemons
that left its session included, can be found and killed by uid (see
:meth:`clrk_runtime.spawning.Spawner.sweep`). A uid goes back to the end of the free list only
once nothing of its sandbox is left, so it is reused as late as possible.
"""

from __future__ import annotations

from collections import deque

__all__ = ["HostIds", "NoFreeId"]


class NoFreeId(RuntimeError):
    """Every uid of the range is held by a live sandbox."""


class HostIds:
    def __init__(self, first: int, count: int) -> None:
        self.first = first
        self.count = count
        self._free = deque(range(first, first + count))

    def take(self) -> int:
        if not self._free:
            last = self.first + self.count - 1
            raise NoFreeId(f"all {self.count} sandbox uids ({self.first}-{last}) are in use; raise sandbox_uids")
        return self._free.popleft()

    def give_back(self, uid: int) -> None:
        self._free.append(uid)

    @property
    def free(self) -> int:
        return len(self._free)
