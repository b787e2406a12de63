from pathlib import Path

import pytest
from pydantic import ValidationError

from clrk_runtime.sandbox.uids import HostIds, NoFreeId
from clrk_runtime.settings import RuntimeSettings


def test_each_take_gets_a_uid_no_one_else_holds(tmp_path: Path) -> None:
    ids = HostIds(1000, 3, tmp_path / "locks")
    taken = [ids.take() for _ in range(3)]
    assert sorted(taken) == [1000, 1001, 1002]
    with pytest.raises(NoFreeId, match="all 3 sandbox uids \\(1000-1002\\) are in use"):
        ids.take()


def test_a_uid_given_back_is_reused_last(tmp_path: Path) -> None:
    ids = HostIds(1000, 3, tmp_path / "locks")
    first = ids.take()
    ids.give_back(first)
    assert [ids.take() for _ in range(3)] == [1001, 1002, first]


def test_a_uid_another_shim_holds_is_skipped_until_it_lets_go(tmp_path: Path) -> None:
    """Two allocators over one range (two agents in one clrk dev, two clrk dev on one host)."""
    mine, theirs = HostIds(1000, 2, tmp_path / "locks"), HostIds(1000, 2, tmp_path / "locks")
    assert theirs.take() == 1000
    assert mine.take() == 1001
    with pytest.raises(NoFreeId):
        mine.take()
    theirs.close()  # as when its process ends
    assert mine.take() == 1000


def test_a_lock_dir_others_can_write_is_refused(tmp_path: Path) -> None:
    (tmp_path / "locks").mkdir(mode=0o777)
    (tmp_path / "locks").chmod(0o777)
    with pytest.raises(PermissionError, match="no one else can write"):
        HostIds(1000, 2, tmp_path / "locks")


def test_the_range_must_hold_the_warm_pool_and_the_running_sandboxes() -> None:
    with pytest.raises(
        ValidationError,
        match=r"sandbox_uids \(CLRK_SANDBOX_UIDS\) is 10: give at least warm_pool \+ max_concurrency \+ 1 \(21\)",
    ):
        RuntimeSettings(warm_pool=4, max_concurrency=16, sandbox_uids=10)
    assert RuntimeSettings(warm_pool=4, max_concurrency=16, sandbox_uids=21).sandbox_uids == 21


def test_a_uid_can_be_claimed_by_number_when_free_everywhere(tmp_path: Path) -> None:
    """At start a shim claims the uids a dead shim's sandboxes left files of, to clean them up."""
    mine, theirs = HostIds(1000, 3, tmp_path / "locks"), HostIds(1000, 3, tmp_path / "locks")
    assert theirs.take() == 1000
    assert not mine.claim(1000), "another shim holds it"
    assert mine.claim(1002)
    assert not mine.claim(1002), "already ours"
    assert mine.take() == 1001
    with pytest.raises(NoFreeId):
        mine.take()
    mine.give_back(1002)
    assert mine.take() == 1002
