"""A gate in the kernel: every open of one directory waits until the test lets it through.

fanotify permission events (``FAN_OPEN_PERM``, root only): whoever opens the marked directory (to
list it, as any walk that removes it must) blocks in ``open`` until :meth:`OpenGate.release`. A
test holds a removal there and checks what else still answers meanwhile: if the walk ran on a
server's event loop, that loop is stuck in the same ``open``.
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
import threading
from types import TracebackType

__all__ = ["OpenGate"]

_FAN_CLASS_CONTENT = 0x4
_FAN_CLOEXEC = 0x1
_FAN_OPEN_PERM = 0x10000
_FAN_ONDIR = 0x40000000
_FAN_MARK_ADD = 0x1
_FAN_ALLOW = 0x1
_AT_FDCWD = -100
_EVENT = struct.Struct("IBBHQii")
"""``struct fanotify_event_metadata``: event_len, vers, reserved, metadata_len, mask, fd, pid."""

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]


class OpenGate:
    """Holds every open of ``directory`` from :meth:`__enter__` until :meth:`release` (or exit)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.held = threading.Event()
        """Set once an open is being held."""
        self.openers: list[int] = []
        """The pid of every process that opened the directory while the gate was up."""
        self._release = threading.Event()
        self._closing = threading.Event()
        self._fd = -1
        self._thread = threading.Thread(target=self._answer, daemon=True)

    def __enter__(self) -> OpenGate:
        fd = _libc.fanotify_init(_FAN_CLASS_CONTENT | _FAN_CLOEXEC, os.O_RDONLY | os.O_LARGEFILE)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "fanotify_init")
        if _libc.fanotify_mark(fd, _FAN_MARK_ADD, _FAN_OPEN_PERM | _FAN_ONDIR, _AT_FDCWD, self.directory.encode()) < 0:
            errno = ctypes.get_errno()
            os.close(fd)
            raise OSError(errno, "fanotify_mark", self.directory)
        self._fd = fd
        self._thread.start()
        return self

    def release(self) -> None:
        self._release.set()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.release()
        self._closing.set()
        self._thread.join(10)
        os.close(self._fd)  # opens still pending are let through by the kernel

    def _answer(self) -> None:
        while not self._closing.is_set():
            if not select.select([self._fd], [], [], 0.05)[0]:
                continue
            data = os.read(self._fd, 4096)
            offset = 0
            while offset < len(data):
                length, _version, _reserved, _size, _mask, fd, pid = _EVENT.unpack_from(data, offset)
                offset += length
                self.openers.append(pid)
                self.held.set()
                self._release.wait()
                os.write(self._fd, struct.pack("iI", fd, _FAN_ALLOW))
                os.close(fd)
