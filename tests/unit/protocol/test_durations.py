"""Durations as manifests and flags write them; times as agents read them."""

import pytest

from clrk_runtime.protocol.durations import parse_duration, rfc3339


@pytest.mark.parametrize(("text", "seconds"), [("100s", 100), ("1m30s", 90), ("250ms", 0.25), ("2", 2), (3, 3)])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10x", "s", "1s2"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_rfc3339_is_utc_with_z() -> None:
    assert rfc3339(1.5) == "1970-01-01T00:00:01.500Z"
