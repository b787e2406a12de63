"""Log lines of ``clrk dev``: kept in memory for the TUI's logs pane, or printed plainly."""

from __future__ import annotations

import logging
import threading
from collections import deque

__all__ = ["PLAIN_FORMAT", "LogBuffer"]

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class LogBuffer(logging.Handler):
    """The last ``capacity`` formatted records, for the TUI, each numbered in order of arrival.

    A reader keeps the number of the last line it has shown (its cursor) and asks for what came
    after it. Counting the lines it was given instead would go wrong once the buffer is full: the
    oldest lines leave as new ones arrive, so the buffer's positions no longer match the numbers.
    """

    def __init__(self, capacity: int = 2000) -> None:
        super().__init__()
        self._lines: deque[tuple[int, str]] = deque(maxlen=capacity)
        self._last = 0
        """The number of the newest line (0: none yet). Lines are numbered 1, 2, 3, … forever."""
        self._lines_lock = threading.Lock()  # records come from any thread; the TUI reads on its own
        self.setFormatter(logging.Formatter(PLAIN_FORMAT, "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        with self._lines_lock:
            self._last += 1
            self._lines.append((self._last, line))

    def since(self, cursor: int) -> tuple[list[str], int]:
        """The lines still held that came after line ``cursor`` (0 for all), oldest first, and
        the cursor to pass next time. Lines that left the buffer unread are skipped, never repeated."""
        with self._lines_lock:
            return [line for number, line in self._lines if number > cursor], self._last
