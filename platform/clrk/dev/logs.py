"""Log lines of ``clrk dev``: kept in memory for the TUI's logs pane, or printed plainly."""

from __future__ import annotations

import logging
import threading
from collections import deque

__all__ = ["PLAIN_FORMAT", "LogBuffer"]

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class LogBuffer(logging.Handler):
    """The last ``capacity`` formatted records, for the TUI."""

    def __init__(self, capacity: int = 2000) -> None:
        super().__init__()
        self.lines: deque[tuple[int, str]] = deque(maxlen=capacity)
        self.count = 0
        self._lock2 = threading.Lock()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        with self._lock2:
            self.count += 1
            self.lines.append((self.count, line))

    def since(self, seen: int) -> list[str]:
        with self._lock2:
            return [line for number, line in self.lines if number > seen]
