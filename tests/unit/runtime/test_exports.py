"""The names other code scripts against: changing them is an API change."""

import clrk_runtime


def test_public_names_are_pinned() -> None:
    assert clrk_runtime.__all__ == [
        "AgentRuntime",
        "NoCapacity",
        "PoolStats",
        "Response",
        "RuntimeSettings",
        "RuntimeStats",
        "ShimApp",
    ]
    for name in clrk_runtime.__all__:
        assert getattr(clrk_runtime, name).__module__.startswith("clrk_runtime.")
