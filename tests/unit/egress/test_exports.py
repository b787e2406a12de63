from __future__ import annotations

import clrk.egress


def test_exported_members() -> None:
    assert sorted(clrk.egress.__all__) == clrk.egress.__all__
    for name in clrk.egress.__all__:
        assert getattr(clrk.egress, name) is not None
