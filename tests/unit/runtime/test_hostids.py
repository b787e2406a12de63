import pytest
from pydantic import ValidationError

from clrk_runtime.hostids import HostIds, NoFreeId
from clrk_runtime.settings import RuntimeSettings


def test_each_take_gets_a_uid_no_one_else_holds() -> None:
    ids = HostIds(1000, 3)
    taken = [ids.take() for _ in range(3)]
    assert sorted(taken) == [1000, 1001, 1002]
    with pytest.raises(NoFreeId, match="all 3 sandbox uids \\(1000-1002\\) are in use"):
        ids.take()


def test_a_uid_given_back_is_reused_last() -> None:
    ids = HostIds(1000, 3)
    first = ids.take()
    ids.give_back(first)
    assert [ids.take() for _ in range(3)] == [1001, 1002, first]


def test_the_range_must_hold_the_warm_pool_and_the_running_sandboxes() -> None:
    with pytest.raises(
        ValidationError, match=r"sandbox_uids is 10: give at least warm_pool \+ max_concurrency \+ 1 \(21\)"
    ):
        RuntimeSettings(warm_pool=4, max_concurrency=16, sandbox_uids=10)
    assert RuntimeSettings(warm_pool=4, max_concurrency=16, sandbox_uids=21).sandbox_uids == 21
