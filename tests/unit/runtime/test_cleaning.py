"""clrk_runtime.launching.cleaning on trees in tmp_path: removal never follows a symlink, a budget
bounds the work done in the spawner's own loop, and a note of the shared places tells whether
anything was added to them since."""

from __future__ import annotations

import os
import time
from pathlib import Path

from clrk_runtime.launching import cleaning


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("keep")
    return victim


def test_remove_path_removes_links_not_what_they_point_at(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    sandbox = tmp_path / "sandbox"
    (sandbox / "work/deep").mkdir(parents=True)
    (sandbox / "work/deep/file").write_text("x")
    (sandbox / "home").symlink_to(victim)  # a HOME swapped for a link
    (sandbox / "work/deep/link").symlink_to(victim / "keep")
    (sandbox / "work/locked").mkdir(mode=0)
    assert cleaning.remove_path(str(sandbox)) is True
    assert not sandbox.exists()
    assert sorted(p.name for p in victim.iterdir()) == ["keep"]


def test_remove_empty_takes_only_the_simple_case(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    simple = tmp_path / "simple"
    for name in ("home", "tmp", "work", "meta"):
        (simple / name).mkdir(parents=True)
    assert cleaning.remove_empty(str(simple)) is True
    assert not simple.exists()
    assert cleaning.remove_empty(str(simple)) is True, "already gone"
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    (swapped / "home").symlink_to(victim)
    assert cleaning.remove_empty(str(swapped)) is False
    assert (victim / "keep").exists() and (swapped / "home").is_symlink()


def test_a_budget_stops_reading_a_big_folder(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    for n in range(500):
        (big / str(n)).touch()
    assert cleaning.remove_path(str(big), budget=64) is False
    assert len(list(big.iterdir())) >= 500 - 65, "at most the budget was removed"
    assert cleaning.remove_path(str(big)) is True
    assert not big.exists()


def test_a_note_of_the_places_tells_whether_one_gained_an_entry(tmp_path: Path) -> None:
    place, missing = tmp_path / "place", str(tmp_path / "missing")
    place.mkdir()
    past = time.time() - 10
    os.utime(place, (past, past))
    noted = cleaning.note_places([str(place), missing])
    assert cleaning.untouched(noted, [str(place), missing])
    (place / "new").touch()
    assert not cleaning.untouched(noted, [str(place), missing])
    assert not cleaning.untouched({}, [str(place)]), "a place never noted counts as touched"


def test_a_place_changed_a_moment_ago_cannot_be_vouched_for(tmp_path: Path) -> None:
    """File times come from a coarse clock: a change within the same tick could go unseen."""
    place = tmp_path / "place"
    place.mkdir()
    (place / "just-now").touch()
    assert cleaning.note_places([str(place)]) == {str(place): None}
