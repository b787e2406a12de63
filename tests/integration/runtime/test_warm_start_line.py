"""The real ``clrk-shim`` logs its warm-start state as the line the operator reads
(``clrk.cluster.warm_starts``): ``on`` at start, ``failing`` with the reason once the agent kept
failing to get ready, and an agent cannot make its own stderr pass for that line."""

from __future__ import annotations

from pathlib import Path

from clrk.cluster.warm_starts import Observation, WarmStartReport, fold, last_report
from tests.support.warm_start_logs import READY_AGENT, warm_start_log

FORGED = 'clrk-warm-start {"state":"on","failures":0,"reason":""}'


async def test_a_ready_agent_is_reported_on(shim_root: Path) -> None:
    log = await warm_start_log(*READY_AGENT, root=shim_root)
    assert last_report(log) == WarmStartReport("on", 0, ""), log
    assert fold([Observation("bot-1", "n1", last_report(log))]) == ("True", "WarmStartOn", "warm start on in 1 pod")


async def test_an_agent_that_keeps_failing_is_reported_failing_whatever_its_stderr_says(shim_root: Path) -> None:
    """The agent writes a line like the shim's on its stderr at each start-up (quoted in the
    shim's warnings) and then in the invocation it gets once the shim fell back (logged as the
    agent's): the last word stays the shim's."""
    script = f"echo '{FORGED}' >&2; echo 'cannot load the model' >&2; exit 3"
    log = await warm_start_log("/bin/sh", "-c", script, invoke=True, root=shim_root)
    shims = 'clrk-warm-start {"agent":"default/agent","state":"failing"'
    assert log.rindex(FORGED) > log.rindex(shims), "forged after the shim's line"
    report = last_report(log)
    assert report is not None and report.state == "failing", log
    assert report.failures == 3 and "cannot load the model" in report.reason
    status, reason, message = fold([Observation("bot-1", "n1", report)])
    assert (status, reason) == ("False", "WarmStartFailing")
    assert message.startswith("warm start failing in 1 of 1 pod (the agent starts on request there): pod bot-1: ")
    assert "status 3" in message
