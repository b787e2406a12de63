"""Removing what a sandbox left, never following a symlink. Standard library only: the spawner
(:mod:`clrk_runtime.launching.spawn_server`) loads this file beside its own.

* :func:`remove_tree` removes one entry and everything below it, relative to a directory
  descriptor: each directory is opened with ``O_NOFOLLOW`` relative to its parent's descriptor
  and each entry unlinked relative to its own directory's, so a symlink is removed, never
  followed, and a directory swapped for a symlink along the way is never entered. The spawner
  runs it on a sandbox's own directory (whose parent, the shim's temp root, only root can write).
* :func:`clean_places` removes, in each shared place (``/tmp``, ``/var/tmp``, ``/dev/shm`` …),
  every top-level entry a uid owns, with everything below it. Only ever run *as that uid* (in a
  process the spawner forks for it): it can then remove only what that uid's own processes could
  have removed, wherever a symlink or a rename by another sandbox points it.
* :func:`note_places` and :func:`untouched` let the spawner skip that scan: a place whose
  modification time has not moved since a sandbox's first process started holds no new entry of
  that sandbox at its top.

Limits: an entry a sandbox put *inside* a folder another live sandbox made world-writable is not
looked for at its own close; it goes when that folder's owner closes (a folder's owner may delete
anything in it). A tree deeper than the descriptor limit is left, and reported as not removed.
"""

from __future__ import annotations

import contextlib
import os
import resource
import stat
import time

__all__ = [
    "clean_places",
    "note_places",
    "raise_descriptor_limit",
    "remove_empty",
    "remove_path",
    "remove_tree",
    "untouched",
]

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_SETTLED = 0.05
"""Seconds a place's modification time must lie in the past for a note of it to count: file
times come from a coarse clock (one scheduler tick behind), so a change within the same tick as
an earlier one could leave the time as it was."""
_MISSING = -1
_FEW = 8
"""Entries :func:`remove_empty` expects at most (a sandbox's home, tmp, work and meta)."""


def remove_tree(parent: int, name: str, *, budget: int | None = None) -> bool:
    """Remove ``name`` (in the directory open as ``parent``) and everything below it.

    True once it is gone (or was already). False when something could not be removed, or when
    more than ``budget`` entries were found (then only what was listed so far was read: what was
    removed by then stays removed). Run as a non-root uid, a directory of that uid's that it may
    not read or write is made ``u+rwx`` first (an agent may have left one ``000``).
    """
    ok = True
    left = budget
    # Depth first, without recursion: (parent's descriptor, name, descriptor, entries left).
    stack: list[tuple[int, str, int, list[tuple[str, bool]]]] = []
    try:
        listed = _enter(stack, parent, name, left)
        if listed is None:
            return _unlink(parent, name)
        while stack:
            if left is not None:
                left -= listed
                if left < 0:
                    return False
            listed = 0
            parent_fd, folder, fd, entries = stack[-1]
            if not entries:
                stack.pop()
                os.close(fd)
                ok = _rmdir(parent_fd, folder) and ok
                continue
            entry, is_directory = entries.pop()
            if is_directory and (listed := _enter(stack, fd, entry, left)) is not None:
                continue
            listed = 0
            ok = _unlink(fd, entry) and ok
        return ok
    finally:
        for _parent, _folder, fd, _entries in stack:
            os.close(fd)


def _enter(
    stack: list[tuple[int, str, int, list[tuple[str, bool]]]], parent: int, name: str, limit: int | None
) -> int | None:
    """Open ``name`` as a directory (never through a symlink) and push it with its entries; how
    many (at most ``limit`` + 1 read), or None if it is not a directory."""
    fd = _open_directory(parent, name)
    if fd is None:
        return None
    entries: list[tuple[str, bool]] = []
    try:
        with os.scandir(fd) as listing:
            for entry in listing:
                entries.append((entry.name, entry.is_dir(follow_symlinks=False)))
                if limit is not None and len(entries) > limit:
                    break
    except OSError:
        entries = []  # unreadable: its rmdir fails, and says so
    stack.append((parent, name, fd, entries))
    return len(entries)


def remove_empty(path: str) -> bool:
    """Remove ``path`` if it holds nothing but empty directories (the usual sandbox after an
    agent that wrote nothing): a few ``rmdir`` by path, the cheapest way. Safe because ``path``'s
    parent is trusted (root's alone to change) and ``rmdir`` never follows a symlink: a symlink,
    a file or a directory with anything in it makes it fail (False), and :func:`remove_tree`
    takes over."""
    names: list[str] = []
    try:
        with os.scandir(path) as entries:
            for entry in entries:  # stops at the first entry that is not the simple case
                if len(names) == _FEW or not entry.is_dir(follow_symlinks=False):
                    return False
                names.append(entry.name)
        for name in names:
            os.rmdir(f"{path}/{name}")
        os.rmdir(path)
    except FileNotFoundError:
        return not names
    except OSError:
        return False
    return True


def remove_path(path: str, *, budget: int | None = None) -> bool:
    """:func:`remove_tree` of ``path``, whose parent path is trusted (root's alone to change)."""
    folder, name = os.path.split(path.rstrip("/"))
    try:
        parent = os.open(folder or "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        return remove_tree(parent, name, budget=budget)
    finally:
        os.close(parent)


def clean_places(uid: int, places: list[str]) -> bool:
    """Remove every top-level entry of each place that ``uid`` owns, with all below it.

    Run as ``uid`` (real and effective): see the module docstring. True if nothing of ``uid`` is
    left at the top of any place.
    """
    ok = True
    for place in places:
        try:
            fd = os.open(place, _DIRECTORY)
        except OSError:  # gone, or no longer a directory: nothing of ours can be in it
            continue
        try:
            with os.scandir(fd) as entries:
                mine = [entry.name for entry in entries if _owner(entry) == uid]
            for name in mine:
                ok = remove_tree(fd, name) and ok
        except OSError:
            ok = False
        finally:
            os.close(fd)
    return ok


def note_places(places: list[str]) -> dict[str, int | None]:
    """Each place's modification time now (None: changed too recently to vouch for)."""
    noted: dict[str, int | None] = {}
    settled = time.time_ns() - int(_SETTLED * 1e9)
    for place in places:
        mtime = _mtime(place)
        noted[place] = mtime if mtime < settled else None
    return noted


def untouched(noted: dict[str, int | None], places: list[str]) -> bool:
    """Whether no place gained or lost an entry since ``noted`` (every place was noted)."""
    return all(noted.get(place) is not None and _mtime(place) == noted[place] for place in places)


def raise_descriptor_limit() -> None:
    """Lift the soft limit on open descriptors to the hard one (one is held per tree level)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _owner(entry: os.DirEntry[str]) -> int | None:
    try:
        return entry.stat(follow_symlinks=False).st_uid
    except OSError:  # gone meanwhile
        return None


def _mtime(place: str) -> int:
    try:
        return os.lstat(place).st_mtime_ns
    except OSError:
        return _MISSING


def _open_directory(parent: int, name: str) -> int | None:
    """``name`` opened as a directory without following a symlink; None if it is none."""
    try:
        fd = os.open(name, _DIRECTORY, dir_fd=parent)
    except PermissionError:
        if not _make_ours_usable(parent, name):
            return None
        try:
            fd = os.open(name, _DIRECTORY, dir_fd=parent)
        except OSError:
            return None
    except OSError:  # ENOTDIR, ELOOP (a symlink), ENOENT: unlink it (or it is gone)
        return None
    euid = os.geteuid()
    if euid != 0:
        with contextlib.suppress(OSError):
            info = os.fstat(fd)
            if info.st_uid == euid and info.st_mode & 0o700 != 0o700:
                os.fchmod(fd, stat.S_IMODE(info.st_mode) | 0o700)
    return fd


def _make_ours_usable(parent: int, name: str) -> bool:
    """Make a directory of ours that we cannot read ``u+rwx`` (through an ``O_PATH`` descriptor,
    which needs no permission on the directory itself and never follows a symlink)."""
    euid = os.geteuid()
    try:
        fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        if euid == 0 or info.st_uid != euid:
            return False
        os.chmod(f"/proc/self/fd/{fd}", stat.S_IMODE(info.st_mode) | 0o700)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _unlink(parent: int, name: str) -> bool:
    try:
        os.unlink(name, dir_fd=parent)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def _rmdir(parent: int, name: str) -> bool:
    try:
        os.rmdir(name, dir_fd=parent)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True
