"""The names users script against are few and stable: changing them is a decision, not an accident."""

import clrk


def test_clrk_exports() -> None:
    assert sorted(clrk.__all__) == [
        "BuildError",
        "Bundle",
        "Caller",
        "ClrkError",
        "ClusterError",
        "ClusterOptions",
        "CredentialInjectionPolicy",
        "EgressPolicyError",
        "SpecError",
        "TaskAgent",
        "TaskSchedule",
        "__version__",
        "compile_bundle",
        "load_bundle",
    ]
    for name in clrk.__all__:
        assert getattr(clrk, name) is not None
