"""The names scripts use from clrk.cluster stay put."""

from __future__ import annotations

import clrk.cluster


def test_exported_members() -> None:
    assert sorted(clrk.cluster.__all__) == sorted(
        [
            "FIELD_MANAGER",
            "ApplyOptions",
            "Cluster",
            "Plan",
            "apply_plan",
            "apply_set_id",
            "connect",
            "delete_plan",
            "format_table",
            "install",
            "list_agents",
            "plan_apply",
            "pod_logs",
            "wait_ready",
        ]
    )
    assert all(hasattr(clrk.cluster, name) for name in clrk.cluster.__all__)
