"""The real ``clrk-shim`` logs its sandbox report once at start, as the line the operator parses
(``clrk.cluster.confinement``): on a kernel (or a ``CLRK_LANDLOCK_ABI``) lacking Landlock pieces,
the TaskAgent's status can only name them if this line says so."""

from __future__ import annotations

from clrk.cluster.confinement import Observation, fold, parse_report
from clrk_runtime.launching import landlock
from tests.support.shim_logs import shim_start_log


async def test_a_capped_landlock_abi_is_reported_with_its_missing_pieces() -> None:
    log = await shim_start_log({"CLRK_LANDLOCK_ABI": "3"})
    report = parse_report(log)
    assert report is not None, log
    assert report.kind == "plain" and report.landlock_abi == min(3, landlock.kernel_abi())
    assert report.missing == tuple(landlock.missing(report.landlock_abi))
    assert "net.tcp" in report.missing and "scope.signal" in report.missing
    assert log.count("clrk-sandbox {") == 1  # once at start, not per sandbox
    assert "plain sandboxes run without net.tcp" in log  # the human warning stays
    status, reason, message = fold([Observation("bot-1", "n1", report)])
    assert (status, reason) == ("False", "LandlockPiecesMissing")
    assert message == f"1 of 1 pod runs without {', '.join(report.missing)}: Landlock ABI 3 on node n1"


async def test_the_kernels_whole_abi_is_reported_complete() -> None:
    log = await shim_start_log()
    report = parse_report(log)
    assert report is not None, log
    assert report.kind == "plain"
    assert report.kernel_landlock_abi == landlock.kernel_abi()
    assert report.missing == tuple(landlock.missing(landlock.kernel_abi()))
    assert fold([Observation("bot-1", "n1", report)])[0] == ("False" if report.missing else "True")
