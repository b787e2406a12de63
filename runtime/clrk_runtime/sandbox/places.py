"""The shared places a plain sandbox can write outside its own directories, found once.

A plain sandbox sees the host's (the pod's) filesystem: besides its ``HOME``, ``TMPDIR`` and work
directory it can write wherever anyone may, that is in world-writable directories (``/tmp``,
``/var/tmp``, ``/dev/shm`` …). Each sandbox runs as a uid of its own, so what it made there is
exactly what that uid owns there: when it closes, the spawner removes it (as that uid, see
:mod:`clrk_runtime.launching.cleaning`) before the uid may serve another sandbox. At start, a
shim cleans up the same way after the uids of its range that own something there already
(:func:`owners`: left by a shim that was killed; ``/dev/shm`` outlives a container's restart in a
pod), unless a process runs as one (:func:`running_uids`): that uid is someone else's now, and
is only kept from sandboxes.

:func:`shared_places` lists them: the usual ones, plus every root-owned world-writable directory
found within :data:`DEPTH` levels of ``/`` on the root filesystem (descending only through
directories root owns). One scan at start, ≈ 20 ms for a Debian root; a cached answer after.
"""

from __future__ import annotations

import functools
import os
import stat

__all__ = ["DEPTH", "USUAL_PLACES", "owners", "running_uids", "shared_places"]

USUAL_PLACES = ("/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue", "/run/lock")  # noqa: S108 - cleaned, not used
"""Always looked at, on whatever filesystem they are (a tmpfs, often)."""
DEPTH = 4
"""Levels below ``/`` scanned (``/var/lib/php/sessions`` is the fourth)."""
_SKIPPED = frozenset({"/proc", "/sys", "/dev"})


@functools.cache
def shared_places() -> tuple[str, ...]:
    """Root-owned world-writable directories: the usual ones that exist, then those the scan found."""
    found = [place for place in USUAL_PLACES if _is_place(place)]
    try:
        device = os.lstat("/").st_dev
    except OSError:
        return tuple(found)
    level = ["/"]
    for _ in range(DEPTH):
        below = []
        for folder in level:
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if entry.path in _SKIPPED or not entry.is_dir(follow_symlinks=False):
                            continue
                        info = entry.stat(follow_symlinks=False)
                        if info.st_dev != device or info.st_uid != 0:
                            continue  # another filesystem, or someone else's folder
                        if info.st_mode & stat.S_IWOTH and entry.path not in found:
                            found.append(entry.path)
                        below.append(entry.path)
            except OSError:
                continue
        level = below
    return tuple(found)


def owners(places: tuple[str, ...], uids: range) -> set[int]:
    """The uids of ``uids`` that own an entry at the top of one of ``places``: what sandboxes of
    a shim that died before it could clean up left (read only, nothing is followed)."""
    found: set[int] = set()
    for place in places:
        try:
            with os.scandir(place) as entries:
                for entry in entries:
                    try:
                        uid = entry.stat(follow_symlinks=False).st_uid
                    except OSError:
                        continue
                    if uid in uids:
                        found.add(uid)
        except OSError:
            continue
    return found


def running_uids() -> set[int]:
    """The real uids of every process on the host (or in the pod)."""
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as status:
                    found.update(int(line.split()[1]) for line in status if line.startswith("Uid:"))
            except OSError:
                continue
    return found


def _is_place(path: str) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == 0 and bool(info.st_mode & stat.S_IWOTH)
