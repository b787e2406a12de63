"""The ``WarmStarted`` condition of a TaskAgent with ``spec.warmStart``: do its pods start the agent
ahead of its requests, or did they fall back to starting it on request, and why.

A shim with warm start logs one line when warm start turns on and at each change of its state:
``clrk-warm-start `` then compact JSON, e.g. ``clrk-warm-start {"state":"on","failures":0,"reason":""}``
or, after the agent failed to get ready 3 times in a row, ``{"state":"failing","failures":3,
"reason":"..."}`` (the shim then starts the agent on request, as without warm start). Unlike the
sandbox report (:mod:`~clrk.cluster.confinement`, logged once at start), that state can change at
any time, so every tick the operator reads the last :data:`TAIL_LINES` lines of the ``agent``
container's log of each running pod (through the API server, as the sandbox report), and the
first :data:`~clrk.cluster.confinement.LIMIT_BYTES` once per pod, where the line of a shim that
started long ago is. The last state each pod logged is kept by pod uid (the ``memory``), so a line
that scrolled out of the tail is not forgotten; pods that are gone are forgotten.

Only the shim's own log records count: the agent's stderr goes to the same log, tagged with the
agent's logger (``clrk_runtime.agent``), and a line the agent writes must not pass for the shim's.
A report is the start of a record's message (the first ``clrk_runtime.…`` word of the line is its
logger), or a line that starts with the prefix.

The pods' states fold into one condition (:func:`fold`, pure): ``True``/``WarmStartOn`` when every
pod that reported starts the agent ahead ("warm start on in 2 pods"); ``False``/``WarmStartFailing``
when any pod's last line says failing, naming those pods and the shims' reasons; ``Unknown`` while
no pod has reported, saying why. As with the sandbox condition, the last True/False stays while
no pod runs.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

from kubernetes.client import CoreV1Api

from clrk.cluster import conditions, confinement
from clrk.cluster.connecting import Cluster
from clrk.errors import ClusterError

__all__ = [
    "AGENT_LOGGER",
    "CONDITION",
    "PREFIX",
    "REASON_LIMIT",
    "TAIL_LINES",
    "LogReader",
    "Observation",
    "ReportError",
    "WarmStartReport",
    "fold",
    "kept",
    "last_report",
    "observe",
    "read_agent_log",
    "settle",
    "summary",
    "warm_start_condition",
]

CONDITION = "WarmStarted"
PREFIX = "clrk-warm-start "
"""What starts the shim's warm-start line (``clrk_runtime.service.runtime.WARM_START_PREFIX``; a
test holds the two equal)."""
AGENT_LOGGER = "clrk_runtime.agent"
"""The logger of the agent's stderr lines (``clrk_runtime.invocation.running.AGENT_LOGGER``)."""
TAIL_LINES = 200
"""How many of a pod's last log lines are read each tick."""
REASON_LIMIT = 300
"""Characters of a shim's reason kept in the condition's message."""
_STATES = ("on", "failing", "off")
_LOGGER = re.compile(r"(?:^|\s)(clrk_runtime(?:\.\w+)+) ")
_REQUEST_TIMEOUT = 10.0

type Part = Literal["head", "tail"]
type LogReader = Callable[[Cluster, str, str, Part], str]
"""``(cluster, namespace, pod, part)`` → the start (``head``) or the last lines (``tail``) of the
pod's ``agent`` log."""


class ReportError(ValueError):
    """A warm-start line that is not what the shim writes."""


@dataclass(frozen=True, slots=True)
class WarmStartReport:
    """One shim's warm-start state, as logged: ``failing`` means it fell back to starting the agent
    on request after ``failures`` failures in a row, the last one being ``reason``."""

    state: str
    failures: int
    reason: str


@dataclass(frozen=True, slots=True)
class Observation:
    """What one running pod told: its last state, or why there is none (``problem``; neither while
    its shim has not logged the line yet)."""

    pod: str
    node: str
    report: WarmStartReport | None = None
    problem: str | None = None


def last_report(text: str) -> WarmStartReport | None:
    """The last warm-start line the shim logged in ``text`` (a log, or its end), or None when there
    is none. A last line without its newline is left out (a log read while it is written may end
    in the middle of one). Raises :class:`ReportError` when that last line is not what the shim
    writes."""
    for line in reversed(text.split("\n")[:-1]):
        body = _shim_message(line)
        if body is None or not body.startswith(PREFIX + "{"):
            continue
        try:
            data = json.loads(body[len(PREFIX) :])
        except ValueError as exc:
            raise ReportError(f"the warm-start line is not JSON: {exc}") from None
        return _report(data)
    return None


def _shim_message(line: str) -> str | None:
    """The message of a record the shim logged (None for the agent's lines), or the whole line when
    it carries no logger's name."""
    if line.startswith(PREFIX):
        return line
    found = _LOGGER.search(line)
    if found is None or found.group(1) == AGENT_LOGGER:
        return None
    return line[found.end() :]


def _report(data: Any) -> WarmStartReport:
    if not isinstance(data, dict) or data.get("state") not in _STATES:
        raise ReportError(f'the warm-start line has no "state" among {", ".join(_STATES)}')
    failures, reason = data.get("failures", 0), data.get("reason", "")
    if not _count(failures) or not isinstance(reason, str):
        raise ReportError('the warm-start line needs an integer "failures" and a string "reason"')
    return WarmStartReport(str(data["state"]), failures, reason)


def _count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def fold(observations: Iterable[Observation]) -> tuple[str, str, str]:
    """``(status, reason, message)`` of the condition for the running pods' observations."""
    seen = sorted(observations, key=lambda o: o.pod)
    reports = [o for o in seen if o.report is not None]
    problems = [f"pod {o.pod}: {o.problem}" for o in seen if o.problem]
    if not seen:
        return "Unknown", "NoPods", "no pod runs: nothing reported yet"
    if not reports:
        if problems:
            return "Unknown", "LogsUnreadable", "cannot read the warm-start state: " + "; ".join(problems)
        return (
            "Unknown",
            "NotReported",
            f"no warm-start line in the log of {_pods(len(seen))} yet (runtime images before it write none)",
        )
    tail = (
        f" ({len(seen) - len(reports)} not reported: {'; '.join(problems) or 'not yet'})"
        if len(reports) < len(seen)
        else ""
    )
    failing = [o for o in reports if o.report is not None and o.report.state == "failing"]
    off = [o for o in reports if o.report is not None and o.report.state == "off"]
    if failing:
        groups: dict[str, list[str]] = {}
        for o in failing:
            assert o.report is not None
            groups.setdefault(_short(o.report.reason) or "no reason given", []).append(o.pod)
        why = "; ".join(
            f"pod{'s' if len(pods) > 1 else ''} {', '.join(pods)}: {reason}"
            for reason, pods in sorted(groups.items(), key=lambda g: (-len(g[1]), g[0]))
        )
        return (
            "False",
            "WarmStartFailing",
            f"warm start failing in {len(failing)} of {_pods(len(seen))} (the agent starts on request there): "
            f"{why}{tail}",
        )
    if off:
        names = ", ".join(o.pod for o in off)
        return "False", "WarmStartOff", f"warm start off in {len(off)} of {_pods(len(seen))} ({names}){tail}"
    count = f"{len(reports)} of {_pods(len(seen))}" if tail else _pods(len(reports))
    return "True", "WarmStartOn", f"warm start on in {count}{tail}"


def _short(reason: str) -> str:
    line = " ".join(reason.split())
    return line if len(line) <= REASON_LIMIT else line[: REASON_LIMIT - 1] + "…"


def _pods(count: int) -> str:
    return f"{count} pod{'s' if count != 1 else ''}"


def read_agent_log(cluster: Cluster, namespace: str, pod: str, part: Part) -> str:
    """The ``agent`` container's log of ``pod`` (API server): its first
    :data:`~clrk.cluster.confinement.LIMIT_BYTES` (``head``) or its last :data:`TAIL_LINES` lines
    (``tail``)."""
    if part == "head":
        return confinement.read_agent_log(cluster, namespace, pod)
    core = CoreV1Api(cluster.api)
    with cluster.calling(f"log of pod {namespace}/{pod}"):
        text = core.read_namespaced_pod_log(
            pod, namespace, container="agent", tail_lines=TAIL_LINES, _request_timeout=_REQUEST_TIMEOUT
        )
    return str(text)


def observe(
    cluster: Cluster,
    namespace: str,
    name: str,
    memory: dict[str, WarmStartReport | None],
    reader: LogReader | None = None,
) -> list[Observation]:
    """One observation per running pod of TaskAgent ``namespace/name``: the last state in the
    tail of its log, else the last one it logged before (``memory``, by pod uid: a pod in it had
    the start of its log read; pods that are gone are forgotten)."""
    read = reader or read_agent_log
    core = CoreV1Api(cluster.api)
    with cluster.calling(f"pods of {namespace}/{name}"):
        pods = core.list_namespaced_pod(
            namespace, label_selector=f"{confinement.LABEL_SERVICE}={name}", _request_timeout=_REQUEST_TIMEOUT
        ).items
    running = [p for p in pods if p.metadata and p.status and p.status.phase == "Running"]
    live = {str(p.metadata.uid) for p in pods if p.metadata}
    for uid in [uid for uid in memory if uid not in live]:
        del memory[uid]
    out = []
    for pod in running:
        meta = pod.metadata
        assert meta is not None
        uid, pod_name = str(meta.uid), str(meta.name)
        node = str((pod.spec.node_name if pod.spec else None) or "")
        try:
            report = last_report(read(cluster, namespace, pod_name, "tail"))
            if report is None and uid not in memory:
                report = last_report(read(cluster, namespace, pod_name, "head"))
        except (ClusterError, ReportError) as exc:
            known = memory.get(uid)
            out.append(Observation(pod_name, node, report=known, problem=None if known else str(exc)))
            continue
        if report is not None or uid not in memory:
            memory[uid] = report
        out.append(Observation(pod_name, node, report=memory[uid]))
    return out


def warm_start_condition(
    cluster: Cluster,
    namespace: str,
    name: str,
    memory: dict[str, WarmStartReport | None],
    stored: Iterable[Mapping[str, Any]],
    reader: LogReader | None = None,
) -> dict[str, str]:
    """The ``WarmStarted`` condition now, given the ``stored`` conditions (kept while no pod runs;
    its ``lastTransitionTime`` kept while its status does not change)."""
    try:
        fresh = fold(observe(cluster, namespace, name, memory, reader))
    except ClusterError as exc:
        fresh = ("Unknown", "PodsUnreadable", f"cannot list the pods: {exc}")
    return settle(fresh, stored)


def settle(
    fresh: tuple[str, str, str], stored: Iterable[Mapping[str, Any]], now: datetime.datetime | None = None
) -> dict[str, str]:
    """The ``WarmStarted`` condition for ``fresh`` (:func:`fold`'s answer) given the ``stored``
    conditions (see :func:`clrk.cluster.conditions.settle`)."""
    return conditions.settle(CONDITION, fresh, stored, now)


def kept(stored: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The stored ``WarmStarted`` condition, for a status rewritten without reading pods."""
    return conditions.kept(CONDITION, stored)


def summary(conditions: Iterable[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """What of the ``WarmStarted`` condition a status patch is worth writing for: its status,
    reason and message (the pods and the shims' reasons change without a status change)."""
    return [(c.get("status"), c.get("reason"), c.get("message")) for c in conditions if c.get("type") == CONDITION]
