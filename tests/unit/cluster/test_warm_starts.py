"""Reading the shim's warm-start lines and folding pods' states into the TaskAgent's
``WarmStarted`` condition."""

from __future__ import annotations

import datetime

import pytest

from clrk.cluster.listing import agent_rows, format_table
from clrk.cluster.warm_starts import (
    AGENT_LOGGER,
    CONDITION,
    PREFIX,
    Observation,
    ReportError,
    WarmStartReport,
    fold,
    kept,
    last_report,
    settle,
    summary,
)
from clrk_runtime.invocation.running import AGENT_LOGGER as RUNTIME_AGENT_LOGGER
from clrk_runtime.service.warming import WARM_START_PREFIX

SHIM = "2026-12-05 15:14:00,740 INFO clrk_runtime.service.warming "
AGENT = "2026-12-05 15:14:01,002 INFO clrk_runtime.agent [019af3c0-...] "
ON = WarmStartReport("on", 0, "")
FAILING = WarmStartReport("failing", 3, "default/bot exited with status 1 before it was ready: boom")


def _line(state: str, failures: int = 0, reason: str = "") -> str:
    return f'{PREFIX}{{"state":"{state}","failures":{failures},"reason":"{reason}"}}'


def test_the_platform_reads_the_prefix_and_loggers_the_runtime_writes() -> None:
    assert PREFIX == WARM_START_PREFIX
    assert AGENT_LOGGER == RUNTIME_AGENT_LOGGER


@pytest.mark.parametrize(
    "log",
    [
        "",
        "INFO:     Started server process [1]\n",
        # a log read while the line is written: not a state yet, not an error
        SHIM + 'clrk-warm-start {"state":"on","fail',
        "clrk-warm-start is what the shim says\n",
    ],
)
def test_no_state_yet(log: str) -> None:
    assert last_report(log) is None


def test_the_last_line_counts() -> None:
    log = f"{SHIM}{_line('on')}\nagent output\n{SHIM}{_line('failing', 3, FAILING.reason[14:])}\n"
    assert last_report(log) == WarmStartReport("failing", 3, FAILING.reason[14:])
    assert last_report(f"{SHIM}{_line('on')}\n") == ON
    assert last_report(f"{_line('on')}\n") == ON  # a line with no logging prefix at all


def test_the_agents_own_lines_do_not_pass_for_the_shims() -> None:
    """An agent's stderr is logged under its own logger, and the shim quotes stderr in the middle
    of its messages: neither is a state, whatever it says."""
    forged = f"{AGENT}{_line('on')}"
    quoted = f"{SHIM}default/bot: warm start failed (1 in a row): stderr: x clrk_runtime.service.warming {_line('on')}"
    log = f"{SHIM}{_line('failing', 3, 'boom')}\n{forged}\n{quoted}\n"
    assert last_report(log) == WarmStartReport("failing", 3, "boom")
    assert last_report(f"{forged}\n") is None


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("clrk-warm-start {not json}", "not JSON"),
        ('clrk-warm-start {"failures":0}', '"state"'),
        ('clrk-warm-start {"state":"sometimes","failures":0,"reason":""}', '"state"'),
        ('clrk-warm-start {"state":"on","failures":"0","reason":""}', '"failures"'),
        ('clrk-warm-start {"state":"on","failures":true,"reason":""}', '"failures"'),
        ('clrk-warm-start {"state":"on","failures":0,"reason":1}', '"reason"'),
    ],
)
def test_a_malformed_line_is_an_error_that_says_why(line: str, why: str) -> None:
    with pytest.raises(ReportError, match=why):
        last_report(f"{SHIM}{line}\n")


def test_no_pods() -> None:
    assert fold([])[:2] == ("Unknown", "NoPods")


def test_logs_that_cannot_be_read_say_why() -> None:
    unreadable = Observation("bot-a", "n1", problem='the API server answered 404: nodes "n1" not found')
    status, reason, message = fold([unreadable, Observation("bot-b", "n2")])
    assert (status, reason) == ("Unknown", "LogsUnreadable")
    assert message == 'cannot read the warm-start state: pod bot-a: the API server answered 404: nodes "n1" not found'


def test_pods_that_have_not_logged_the_line_yet() -> None:
    assert fold([Observation("bot-a", "n1"), Observation("bot-b", "n1")]) == (
        "Unknown",
        "NotReported",
        "no warm-start line in the log of 2 pods yet (runtime images before it write none)",
    )


def test_every_pod_on_is_true() -> None:
    assert fold([Observation("bot-a", "n1", ON), Observation("bot-b", "n2", ON)]) == (
        "True",
        "WarmStartOn",
        "warm start on in 2 pods",
    )
    assert fold([Observation("bot-a", "n1", ON), Observation("bot-b", "n2", problem="gone")]) == (
        "True",
        "WarmStartOn",
        "warm start on in 1 of 2 pods (1 not reported: pod bot-b: gone)",
    )


def test_one_failing_pod_makes_it_false_with_the_shims_reason() -> None:
    observations = [
        Observation("bot-a", "n1", ON),
        Observation("bot-b", "n1", FAILING),
        Observation("bot-c", "n2", FAILING),
        Observation("bot-d", "n2", WarmStartReport("failing", 3, "not ready after 60s\n(CLRK_WARM_START_TIMEOUT)")),
    ]
    assert fold(observations) == (
        "False",
        "WarmStartFailing",
        "warm start failing in 3 of 4 pods (the agent starts on request there): "
        f"pods bot-b, bot-c: {FAILING.reason}; pod bot-d: not ready after 60s (CLRK_WARM_START_TIMEOUT)",
    )


def test_a_long_reason_is_cut() -> None:
    _status, _reason, message = fold([Observation("bot-a", "n1", WarmStartReport("failing", 3, "x" * 5000))])
    assert len(message) < 500 and message.endswith("x…")


def test_a_pod_with_warm_start_off_is_named() -> None:
    off = WarmStartReport("off", 0, "")
    assert fold([Observation("bot-a", "n1", ON), Observation("bot-b", "n1", off)]) == (
        "False",
        "WarmStartOff",
        "warm start off in 1 of 2 pods (bot-b)",
    )


NOW = datetime.datetime(2026, 12, 5, 15, 0, tzinfo=datetime.UTC)


def test_settle_stamps_keeps_and_moves_the_transition_time() -> None:
    on = settle(fold([Observation("bot-a", "n1", ON)]), [{"type": "Ready", "status": "True"}], NOW)
    assert on == {
        "type": CONDITION,
        "status": "True",
        "reason": "WarmStartOn",
        "message": "warm start on in 1 pod",
        "lastTransitionTime": "2026-12-05T15:00:00Z",
    }
    later = NOW + datetime.timedelta(minutes=5)
    two = settle(fold([Observation("bot-a", "n1", ON), Observation("bot-b", "n1", ON)]), [on], later)
    assert two["message"] == "warm start on in 2 pods" and two["lastTransitionTime"] == on["lastTransitionTime"]
    failing = settle(fold([Observation("bot-a", "n1", FAILING)]), [two], later)
    assert failing["lastTransitionTime"] == "2026-12-05T15:05:00Z"
    assert settle(fold([]), [failing], later + datetime.timedelta(hours=1)) == failing, "the last word stays"


def test_a_status_rewrite_keeps_the_condition_and_a_new_message_is_worth_a_patch() -> None:
    ready = {"type": "Ready", "status": "True", "message": "m"}
    warm = {"type": CONDITION, "status": "True", "reason": "WarmStartOn", "message": "warm start on in 1 pod"}
    assert kept([ready, warm]) == [warm]
    assert summary([ready, warm]) != summary([ready, {**warm, "message": "warm start on in 2 pods"}])
    assert summary([ready, warm]) == summary([{**ready, "message": "other"}, dict(warm)])
    assert summary([ready]) != summary([ready, warm]), "a condition dropped (warmStart turned off) is a change"


def test_clrk_get_shows_a_failing_warm_start() -> None:
    service = {
        "metadata": {"generation": 1},
        "status": {"observedGeneration": 1, "url": "http://bot", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    failing = {
        "type": CONDITION,
        "status": "False",
        "reason": "WarmStartFailing",
        "message": "warm start failing in 1 of 2 pods (the agent starts on request there): pod bot-a: exited",
    }
    agent = {"metadata": {"namespace": "team", "name": "bot"}, "spec": {}, "status": {"conditions": [failing]}}
    [row] = agent_rows([agent], {("team", "bot"): service})
    assert row.ready == "True"
    assert row.reason == f"warm start: {failing['message']}"
    assert "warm start: warm start failing in 1 of 2 pods" in format_table([row], namespaces=False)
    on = {**failing, "status": "True", "reason": "WarmStartOn", "message": "warm start on in 2 pods"}
    [row] = agent_rows([{**agent, "status": {"conditions": [on]}}], {("team", "bot"): service})
    assert row.reason == ""
