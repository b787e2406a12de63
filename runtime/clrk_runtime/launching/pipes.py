"""A child's pipes on the event loop: plain reader and writer callbacks on raw descriptors.

Lighter than asyncio's pipe transports and stream readers (no transport, protocol, waiter or
task per pipe): a sandbox is three pipes, made and dropped at every invocation, and their setup
showed up as a large share of the shim's loop time in ``hack/bench_shim.py``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

__all__ = ["Input", "Output"]

_CHUNK = 65536


class Output:
    """The read end of a child's stdout or stderr, read until EOF as data arrives.

    What arrives before :meth:`consume` is kept and handed over then (a stub may write before
    its invocation comes). :attr:`eof` is done at end of file, or once closed.
    """

    def __init__(self, fd: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._fd = fd
        self._pending: list[bytes] = []
        self._consumer: Callable[[bytes], None] | None = None
        self.eof: asyncio.Future[None] = self._loop.create_future()
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._readable)

    def consume(self, consumer: Callable[[bytes], None]) -> None:
        """Hand every chunk, from the first, to ``consumer``."""
        self._consumer = consumer
        for chunk in self._pending:
            consumer(chunk)
        self._pending.clear()

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, _CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
        elif self._consumer is not None:
            self._consumer(data)
        else:
            self._pending.append(data)

    def close(self) -> None:
        """Stop reading and close the descriptor (idempotent); what was not read is dropped."""
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
        if not self.eof.done():
            self.eof.set_result(None)


class Input:
    """The write end of a child's stdin: :meth:`feed` writes everything, then closes it."""

    def __init__(self, fd: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._fd = fd
        self._data = memoryview(b"")
        self._waiting = False
        os.set_blocking(fd, False)

    def feed(self, data: bytes) -> None:
        """Write ``data`` and close: at once what the pipe holds, the rest as the child reads.

        A child that exits without reading it all just ends the writing (broken pipe).
        """
        self._data = memoryview(data)
        self._writable()

    def _writable(self) -> None:
        while self._data and self._fd >= 0:
            try:
                written = os.write(self._fd, self._data)
            except BlockingIOError:
                if not self._waiting:
                    self._waiting = True
                    self._loop.add_writer(self._fd, self._writable)
                return
            except OSError:  # the child closed its end: nothing more to write
                break
            self._data = self._data[written:]
        self.close()

    def close(self) -> None:
        """Stop writing and close the descriptor (idempotent)."""
        if self._fd >= 0:
            if self._waiting:
                self._loop.remove_writer(self._fd)
                self._waiting = False
            os.close(self._fd)
            self._fd = -1
        self._data = memoryview(b"")
