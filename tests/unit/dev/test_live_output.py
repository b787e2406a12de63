"""What the TUI keeps of invocations' stdout: lines as they complete, bounded per invocation and
in invocations, shown as text only."""

from __future__ import annotations

from clrk.dev.live_output import LiveOutput


def test_lines_are_kept_as_they_complete_and_the_rest_at_the_end() -> None:
    live = LiveOutput()
    live.feed("default/bot", "inv-1", b"one\ntw")
    assert live.lines("inv-1") == ["one"]
    assert live.is_running("inv-1")
    live.feed("default/bot", "inv-1", b"o\r\nthr")
    live.feed("default/bot", "inv-1", b"")
    assert live.lines("inv-1") == ["one", "two", "thr"]
    assert not live.is_running("inv-1")
    assert live.agent("inv-1") == "default/bot"


def test_each_invocation_keeps_its_last_lines_only() -> None:
    live = LiveOutput(lines_kept=3)
    live.feed("a", "inv-1", b"".join(f"{n}\n".encode() for n in range(10)))
    assert live.lines("inv-1") == ["7", "8", "9"]
    assert live.since("inv-1", 0) == (["7", "8", "9"], 10), "what is kept of what was not seen"
    assert live.since("inv-1", 8) == (["8", "9"], 10)
    assert live.since("inv-1", 10) == ([], 10)
    assert live.since("gone", 4) == ([], 4)


def test_a_long_line_is_kept_in_pieces() -> None:
    live = LiveOutput(line_limit=4)
    live.feed("a", "inv-1", b"abcdefghij\n")
    assert live.lines("inv-1") == ["abcd", "efgh", "ij"]


def test_the_oldest_invocations_are_dropped() -> None:
    live = LiveOutput(invocations_kept=2)
    for n in range(1, 4):
        live.feed("a", f"inv-{n}", b"x\n")
    assert live.lines("inv-1") == [] and not live.is_running("inv-1")
    assert live.lines("inv-3") == ["x"]
    live.feed("a", "inv-1", b"")
    assert live.lines("inv-1") == [], "the end of one dropped is not a new one"


def test_the_latest_running_invocation_is_shown_by_default() -> None:
    live = LiveOutput()
    assert live.latest() is None
    live.feed("a", "inv-1", b"x\n")
    live.feed("a", "inv-2", b"y\n")
    assert live.latest() == "inv-2"
    live.feed("a", "inv-2", b"")
    assert live.latest() == "inv-1", "the one still running"
    live.feed("a", "inv-1", b"")
    assert live.latest() == "inv-2", "none runs: the last started"


def test_control_characters_cannot_drive_the_terminal() -> None:
    live = LiveOutput()
    # An OSC title, a bell, an SGR colour, U+009B (CSI in one character) and a tab, which stays.
    live.feed("a", "inv-1", b"\x1b]0;pwned\x07red \x1b[31mtext\xc2\x9b\ttab\n")
    (line,) = live.lines("inv-1")
    assert "\x1b" not in line and "\x07" not in line and "\u009b" not in line
    assert line == "\ufffd]0;pwned\ufffdred \ufffd[31mtext\ufffd\ttab"


def test_every_change_bumps_the_version() -> None:
    live = LiveOutput()
    seen = live.version
    live.feed("a", "inv-1", b"partial")
    assert live.version > seen
    seen = live.version
    live.feed("a", "inv-1", b"")
    assert live.version > seen
