"""Reading a file an agent wrote, with the shim's privileges but never on the agent's terms.

The shim is root; the agent owns its sandbox's directory and everything in it, so any name below
that directory is the agent's to point elsewhere: a symlink to a file only root may read, a FIFO
that no one will ever write, a directory, a file of gigabytes. :func:`read_agent_file` therefore
opens the sandbox's directory (its parent is the shim's temp root, root's alone), then each name
relative to the descriptor before it (``openat``) with ``O_NOFOLLOW``, the last one also with
``O_NONBLOCK`` (a FIFO opens at once and is refused, it is never read). What it opened must be a
regular file, owned by the sandbox's uid when it has one, of at most ``cap`` bytes: anything else
raises :class:`RefusedFile`, saying why. It blocks on nothing an agent controls, yet it is disk
I/O: callers on an event loop run it in a thread (see
:meth:`Sandbox.read_response_headers <clrk_runtime.sandbox.sandboxes.Sandbox.read_response_headers>`).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence

__all__ = ["HEADERS_CAP", "RefusedFile", "read_agent_file"]

HEADERS_CAP = 8192
"""Bytes of ``$CLRK_METADATA_RESPONSE_HEADERS`` read at most: a few CGI-style lines fit many times."""
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class RefusedFile(Exception):
    """A file an agent declared was not read: the message says why (for the log)."""


def read_agent_file(directory: str, names: Sequence[str], uid: int | None, cap: int) -> bytes | None:
    """The content of ``directory/names[0]/…/names[-1]``, or None when it does not exist.

    ``directory`` is a sandbox's own (its path is trusted, its content is not); ``names`` are
    single path components. Raises :class:`RefusedFile` for a symlink anywhere below
    ``directory``, anything but a regular file at the end, a file not owned by ``uid`` (when
    given) or one over ``cap`` bytes.
    """
    path = "/".join(names)
    opened: list[int] = []
    try:
        try:
            opened.append(os.open(directory, _DIRECTORY))
            for name in names[:-1]:
                opened.append(os.open(name, _DIRECTORY, dir_fd=opened[-1]))
            opened.append(os.open(names[-1], _FILE, dir_fd=opened[-1]))
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise RefusedFile(f"{path}: a symlink, or a file where a directory belongs") from None
            raise RefusedFile(f"{path}: cannot be opened ({exc.strerror})") from None
        fd = opened[-1]
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RefusedFile(f"{path}: not a regular file ({_kind(info.st_mode)})")
        if uid is not None and info.st_uid != uid:
            raise RefusedFile(f"{path}: owned by uid {info.st_uid}, not by the sandbox's ({uid})")
        if info.st_size > cap:
            raise RefusedFile(f"{path}: {info.st_size} bytes, over the {cap} read at most")
        data = os.read(fd, cap + 1)
        if len(data) > cap:  # grew since the fstat
            raise RefusedFile(f"{path}: over the {cap} bytes read at most")
        return data
    except OSError as exc:
        raise RefusedFile(f"{path}: cannot be read ({exc.strerror})") from None
    finally:
        for fd in opened:
            os.close(fd)


def _kind(mode: int) -> str:
    kinds = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket"}
    return kinds.get(stat.S_IFMT(mode), "a device")
