"""The TUI's log buffer: a reader that keeps up sees every line once, in order, however long
``clrk dev`` runs (the buffer is bounded, so its oldest lines leave as new ones come)."""

from __future__ import annotations

import logging

from clrk.dev.logs import LogBuffer


def _log(buffer: LogBuffer, message: str) -> None:
    buffer.handle(logging.makeLogRecord({"name": "clrk.dev", "levelname": "INFO", "msg": message}))


def _messages(lines: list[str]) -> list[str]:
    return [line.split(" clrk.dev ", 1)[1] for line in lines]


def test_every_line_once_and_in_order_after_the_buffer_wraps() -> None:
    buffer = LogBuffer(capacity=5)
    for n in range(1, 9):  # past capacity before the first read, as when the TUI starts late
        _log(buffer, f"line {n}")
    seen: list[str] = []
    cursor = 0
    logged = 8
    for burst in (0, 3, 5, 4, 1, 5, 2):  # then read between bursts, each within the capacity
        for _ in range(burst):
            logged += 1
            _log(buffer, f"line {logged}")
        new, cursor = buffer.since(cursor)
        seen += _messages(new)
    assert seen == [f"line {n}" for n in range(4, 29)], "lines 1-3 left before the first read"
    assert buffer.since(cursor) == ([], cursor), "nothing new: nothing again"


def test_lines_that_left_unread_are_skipped_not_repeated() -> None:
    buffer = LogBuffer(capacity=3)
    _log(buffer, "first")
    new, cursor = buffer.since(0)
    assert _messages(new) == ["first"]
    for n in range(2, 9):  # more than the buffer holds before the next read
        _log(buffer, f"line {n}")
    new, cursor = buffer.since(cursor)
    assert _messages(new) == ["line 6", "line 7", "line 8"]
    _log(buffer, "last")
    assert _messages(buffer.since(cursor)[0]) == ["last"]


def test_lines_are_formatted_like_the_plain_log() -> None:
    buffer = LogBuffer()
    _log(buffer, "hello")
    [line], _ = buffer.since(0)
    time, level, name, message = line.split(" ", 3)
    assert (len(time), level, name, message) == (len("12:00:00"), "INFO", "clrk.dev", "hello")
