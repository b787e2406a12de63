"""Parsing the shim's sandbox report line and folding pods' reports into the TaskAgent's
``SandboxConfined`` condition, and ``clrk get`` showing it when it is not True."""

from __future__ import annotations

import datetime

import pytest

from clrk.cluster.confinement import (
    CONDITION,
    PREFIX,
    Observation,
    PodReport,
    ReportError,
    fold,
    kept,
    parse_report,
    settle,
    summary,
)
from clrk.cluster.listing import agent_rows, format_table
from clrk_runtime.service.runtime import REPORT_PREFIX, SandboxReport

LOGGED = "2026-12-05 15:14:00,740 INFO clrk_runtime.service.runtime "
FULL = PodReport("plain", 7, 7, ())
ABI5 = PodReport("plain", 5, 5, ("scope.abstract_unix_socket", "scope.signal"))


def test_the_platform_parses_the_prefix_the_runtime_writes() -> None:
    assert PREFIX == REPORT_PREFIX
    line = SandboxReport("plain", 5, 5, ABI5.missing).line()
    assert parse_report(f"{LOGGED}{line}\n") == ABI5
    assert parse_report(f"{SandboxReport('bwrap', 0, 7, ()).line()}\n") == PodReport("bwrap", 0, 0, ())


@pytest.mark.parametrize(
    "log",
    [
        "",
        "INFO:     Started server process [1]\n",
        # a log read with limitBytes that stops inside the line: not a report yet, not an error
        LOGGED + 'clrk-sandbox {"kind":"plain","landlockAbi":7,"kern',
        # the agent's own output mentioning the word, not a report
        "clrk-sandbox is what the shim says\n",
    ],
)
def test_no_report_yet(log: str) -> None:
    assert parse_report(log) is None


def test_the_first_report_counts() -> None:
    first = 'clrk-sandbox {"kind":"plain","landlockAbi":7,"kernelLandlockAbi":7,"missing":[]}'
    later = 'clrk-sandbox {"kind":"plain","landlockAbi":1,"kernelLandlockAbi":1,"missing":["fs.refer"]}'
    assert parse_report(f"{LOGGED}{first}\nagent output\n{later}\n") == FULL


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("clrk-sandbox {not json}", "not JSON"),
        ('clrk-sandbox {"landlockAbi":7}', '"kind"'),
        ('clrk-sandbox {"kind":"plain","landlockAbi":"7","kernelLandlockAbi":7,"missing":[]}', "integer"),
        ('clrk-sandbox {"kind":"plain","landlockAbi":true,"kernelLandlockAbi":7,"missing":[]}', "integer"),
        ('clrk-sandbox {"kind":"plain","landlockAbi":7,"kernelLandlockAbi":7,"missing":"none"}', '"missing"'),
        ('clrk-sandbox {"kind":"plain","landlockAbi":7,"kernelLandlockAbi":7,"missing":[1]}', '"missing"'),
    ],
)
def test_a_malformed_report_is_an_error_that_says_why(line: str, why: str) -> None:
    with pytest.raises(ReportError, match=why):
        parse_report(f"{LOGGED}{line}\n")


def test_no_pods() -> None:
    status, reason, message = fold([])
    assert (status, reason) == ("Unknown", "NoPods")
    assert "no pod runs" in message


def test_logs_that_cannot_be_read_say_why() -> None:
    unreadable = Observation("bot-a", "n1", problem='the API server answered 404: nodes "n1" not found')
    status, reason, message = fold([unreadable, Observation("bot-b", "n2")])
    assert (status, reason) == ("Unknown", "LogsUnreadable")
    assert message == 'cannot read the sandbox report: pod bot-a: the API server answered 404: nodes "n1" not found'


def test_pods_that_have_not_logged_the_line_yet() -> None:
    assert fold([Observation("bot-a", "n1"), Observation("bot-b", "n1")]) == (
        "Unknown",
        "NotReported",
        "no report in the log of 2 pods yet (runtime images before it write none)",
    )


def test_every_reporting_pod_complete_is_true() -> None:
    status, reason, message = fold([Observation("bot-a", "n1", FULL), Observation("bot-b", "n2", FULL)])
    assert (status, reason) == ("True", "Confined")
    assert message == "2 of 2 pods confined, no Landlock piece missing"
    bwrap = Observation("bot-c", "n3", PodReport("bwrap", 0, 0, ()))
    assert fold([Observation("bot-a", "n1", FULL), bwrap])[0] == "True"


def test_true_says_which_pods_did_not_report() -> None:
    status, _reason, message = fold([Observation("bot-a", "n1", FULL), Observation("bot-b", "n2", problem="gone")])
    assert status == "True"
    assert message == "1 of 2 pods confined, no Landlock piece missing (1 not reported: pod bot-b: gone)"


def test_missing_pieces_name_the_abi_and_the_nodes() -> None:
    observations = [
        Observation("bot-a", "n1", ABI5),
        Observation("bot-b", "n1", ABI5),
        Observation("bot-c", "n2", FULL),
    ]
    assert fold(observations) == (
        "False",
        "LandlockPiecesMissing",
        "2 of 3 pods run without scope.abstract_unix_socket, scope.signal: Landlock ABI 5 on node n1",
    )


def test_different_kernels_are_named_apart() -> None:
    abi3 = PodReport("plain", 3, 3, ("net.tcp", "fs.ioctl_dev", "scope.abstract_unix_socket", "scope.signal"))
    observations = [
        Observation("bot-a", "n1", ABI5),
        Observation("bot-b", "n2", ABI5),
        Observation("bot-c", "n3", abi3),
        Observation("bot-d", "", None),
    ]
    status, _reason, message = fold(observations)
    assert status == "False"
    assert message == (
        "2 of 4 pods run without scope.abstract_unix_socket, scope.signal: Landlock ABI 5 on nodes n1, n2; "
        "1 of 4 pods runs without net.tcp, fs.ioctl_dev, scope.abstract_unix_socket, scope.signal: "
        "Landlock ABI 3 on node n3 (1 not reported: not yet)"
    )


def test_a_status_rewrite_keeps_the_sandbox_condition_and_a_new_message_is_worth_a_patch() -> None:
    ready = {"type": "Ready", "status": "Unknown", "message": "m"}
    sandbox = {"type": CONDITION, "status": "False", "message": "1 of 1 pod runs without net.tcp"}
    assert kept([ready, sandbox]) == [sandbox]
    assert summary([ready, sandbox]) != summary([ready, {**sandbox, "message": "2 of 2 pods run without net.tcp"}])
    assert summary([ready, sandbox]) == summary([{**ready, "message": "other"}, dict(sandbox)])


def _agent(conditions: list[dict[str, str]]) -> dict[str, object]:
    return {
        "metadata": {"namespace": "team", "name": "bot"},
        "spec": {"template": {"spec": {"image": "example.com/bot:1"}}},
        "status": {"conditions": conditions},
    }


def test_clrk_get_shows_the_sandbox_condition_when_it_is_not_true() -> None:
    ready_service = {
        "metadata": {"generation": 1},
        "status": {"observedGeneration": 1, "url": "http://bot", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    missing = {
        "type": CONDITION,
        "status": "False",
        "message": "1 of 1 pod runs without net.tcp: Landlock ABI 3 on node n1",
    }
    [row] = agent_rows([_agent([missing])], {("team", "bot"): ready_service})
    assert row.ready == "True"
    assert row.reason == "sandbox: 1 of 1 pod runs without net.tcp: Landlock ABI 3 on node n1"
    assert "sandbox: 1 of 1 pod runs without net.tcp" in format_table([row], namespaces=False)

    confined = {**missing, "status": "True", "message": "1 of 1 pod confined, no Landlock piece missing"}
    [row] = agent_rows([_agent([confined])], {("team", "bot"): ready_service})
    assert row.reason == ""

    [row] = agent_rows([_agent([{**missing, "status": "Unknown", "message": "no pod runs"}])], {})
    assert row.reason == "no Knative Service yet; sandbox: no pod runs"


NOW = datetime.datetime(2026, 12, 5, 15, 0, tzinfo=datetime.UTC)


def test_a_new_condition_is_stamped_now() -> None:
    fresh = fold([Observation("bot-a", "n1", ABI5)])
    assert settle(fresh, [{"type": "Ready", "status": "True"}], NOW) == {
        "type": CONDITION,
        "status": "False",
        "reason": "LandlockPiecesMissing",
        "message": fresh[2],
        "lastTransitionTime": "2026-12-05T15:00:00Z",
    }


def test_scaled_to_zero_the_last_word_on_the_pods_that_ran_stays() -> None:
    before = settle(fold([Observation("bot-a", "n1", ABI5)]), [], NOW)
    assert settle(fold([]), [before], NOW + datetime.timedelta(hours=1)) == before
    unknown = settle(fold([Observation("bot-a", "n1")]), [], NOW)
    assert settle(fold([]), [unknown], NOW)["reason"] == "NoPods"  # an Unknown says why anew


def test_the_transition_time_moves_only_with_the_status() -> None:
    before = settle(fold([Observation("bot-a", "n1", ABI5)]), [], NOW)
    later = NOW + datetime.timedelta(minutes=5)
    two = settle(fold([Observation("bot-a", "n1", ABI5), Observation("bot-b", "n1", ABI5)]), [before], later)
    assert two["message"].startswith("2 of 2 pods run without") and two["lastTransitionTime"] == "2026-12-05T15:00:00Z"
    assert (
        settle(fold([Observation("bot-c", "n2", FULL)]), [two], later)["lastTransitionTime"] == "2026-12-05T15:05:00Z"
    )
