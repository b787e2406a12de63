"""The ``SandboxConfined`` condition of a TaskAgent: which Landlock pieces its pods' sandboxes lack.

Each shim logs once at start how its sandboxes are confined, as one line: ``clrk-sandbox `` then
JSON (``clrk_runtime.service.runtime.SandboxReport``), e.g.
``clrk-sandbox {"kind":"plain","landlockAbi":5,"kernelLandlockAbi":5,"missing":["scope.signal"]}``.
The operator reads it from the pod's log through the API server (the kubelet serves it): clrk's
NetworkPolicies let nothing but the ingress and Knative's data plane connect to an agent pod, and
a log needs no connection to the pod. Only the first :data:`LIMIT_BYTES` of the ``agent``
container's log of each running pod are read, once per pod (the report is cached by pod uid), so
a busy agent's log costs nothing after its first tick.

The reports fold into one condition (:func:`fold`, pure): ``True`` when every pod that reported
runs its sandboxes with nothing missing; ``False`` naming the missing pieces, the Landlock ABI and
the nodes ("2 of 3 pods run without scope.signal: Landlock ABI 5 on node n1"); ``Unknown`` while no
pod has reported, saying why (none running, logs unreadable and the API server's answer). When the
agent scales to zero, the last True/False stays: it describes the pods that last ran.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from kubernetes.client import CoreV1Api

from clrk.cluster import conditions
from clrk.cluster.connecting import Cluster
from clrk.errors import ClusterError

__all__ = [
    "CONDITION",
    "LIMIT_BYTES",
    "PREFIX",
    "LogReader",
    "Observation",
    "PodReport",
    "ReportError",
    "fold",
    "kept",
    "observe",
    "parse_report",
    "read_agent_log",
    "sandbox_condition",
    "settle",
    "summary",
]

CONDITION = "SandboxConfined"
PREFIX = "clrk-sandbox "
"""What starts the shim's report line (``clrk_runtime.service.runtime.REPORT_PREFIX``; the
platform does not import the runtime's service layer, a test holds the two equal)."""
LIMIT_BYTES = 16 * 1024
"""How much of a pod's log is read: the report comes among the shim's first start-up lines."""
LABEL_SERVICE = "serving.knative.dev/service"
"""Knative labels a Service's pods with its name (``serving.ServiceLabelKey``)."""
_REQUEST_TIMEOUT = 10.0

type LogReader = Callable[[Cluster, str, str], str]
"""``(cluster, namespace, pod)`` → the first :data:`LIMIT_BYTES` of the pod's ``agent`` log."""


class ReportError(ValueError):
    """A report line that is not what the shim writes."""


@dataclass(frozen=True, slots=True)
class PodReport:
    """One shim's report, as logged (``missing``: the Landlock pieces its sandboxes go without)."""

    kind: str
    landlock_abi: int
    kernel_landlock_abi: int
    missing: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Observation:
    """What one running pod told: its report, or why there is none (``problem``; neither while
    its shim has not logged the line yet)."""

    pod: str
    node: str
    report: PodReport | None = None
    problem: str | None = None


def parse_report(text: str) -> PodReport | None:
    """The first report line in ``text`` (a log, whatever prefix the shim's logging puts before
    the line), or None when there is none yet. A last line without its newline is left out (a log
    read with ``limitBytes`` may end in the middle of one). Raises :class:`ReportError` for a line
    that starts like a report and is not one."""
    lines = text.split("\n")[:-1]
    for line in lines:
        start = line.find(PREFIX + "{")
        if start < 0:
            continue
        try:
            data = json.loads(line[start + len(PREFIX) :])
        except ValueError as exc:
            raise ReportError(f"the sandbox report is not JSON: {exc}") from None
        return _report(data)
    return None


def _report(data: Any) -> PodReport:
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        raise ReportError('the sandbox report has no "kind"')
    if data["kind"] != "plain":  # bubblewrap: confined by namespaces, no Landlock pieces to miss
        return PodReport(data["kind"], 0, 0, ())
    abi, kernel, missing = data.get("landlockAbi"), data.get("kernelLandlockAbi"), data.get("missing")
    if not (_integer(abi) and _integer(kernel) and isinstance(missing, list)) or not all(
        isinstance(m, str) for m in missing
    ):
        raise ReportError(
            'a plain sandbox report needs integer "landlockAbi", "kernelLandlockAbi" and a "missing" list'
        )
    return PodReport("plain", abi, kernel, tuple(missing))


def _integer(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def fold(observations: Iterable[Observation]) -> tuple[str, str, str]:
    """``(status, reason, message)`` of the condition for the running pods' observations."""
    seen = sorted(observations, key=lambda o: o.pod)
    reports = [o for o in seen if o.report is not None]
    problems = [f"pod {o.pod}: {o.problem}" for o in seen if o.problem]
    if not seen:
        return "Unknown", "NoPods", "no pod runs (the agent scales to zero when idle): nothing reported yet"
    if not reports:
        if problems:
            return "Unknown", "LogsUnreadable", "cannot read the sandbox report: " + "; ".join(problems)
        return (
            "Unknown",
            "NotReported",
            f"no report in the log of {_pods(len(seen))} yet (runtime images before it write none)",
        )
    groups: dict[tuple[tuple[str, ...], int], list[Observation]] = {}
    for o in reports:
        assert o.report is not None
        if o.report.missing:
            groups.setdefault((o.report.missing, o.report.landlock_abi), []).append(o)
    tail = (
        f" ({len(seen) - len(reports)} not reported: {'; '.join(problems) or 'not yet'})"
        if len(reports) < len(seen)
        else ""
    )
    if not groups:
        return "True", "Confined", f"{len(reports)} of {_pods(len(seen))} confined, no Landlock piece missing{tail}"
    parts = []
    for (missing, abi), pods in sorted(groups.items(), key=lambda g: (-len(g[1]), g[0])):
        nodes = sorted({o.node or "?" for o in pods})
        where = f"node{'s' if len(nodes) > 1 else ''} {', '.join(nodes)}"
        run = "runs" if len(pods) == 1 else "run"
        parts.append(
            f"{len(pods)} of {_pods(len(seen))} {run} without {', '.join(missing)}: Landlock ABI {abi} on {where}"
        )
    return "False", "LandlockPiecesMissing", "; ".join(parts) + tail


def _pods(count: int) -> str:
    return f"{count} pod{'s' if count != 1 else ''}"


def read_agent_log(cluster: Cluster, namespace: str, pod: str) -> str:
    """The first :data:`LIMIT_BYTES` of the ``agent`` container's log of ``pod`` (API server)."""
    core = CoreV1Api(cluster.api)
    with cluster.calling(f"log of pod {namespace}/{pod}"):
        text = core.read_namespaced_pod_log(
            pod, namespace, container="agent", limit_bytes=LIMIT_BYTES, _request_timeout=_REQUEST_TIMEOUT
        )
    return str(text)


def observe(
    cluster: Cluster, namespace: str, name: str, cache: dict[str, Observation], reader: LogReader | None = None
) -> list[Observation]:
    """One observation per running pod of TaskAgent ``namespace/name``; a pod's report is read
    once (``cache``, by pod uid, forgets pods that are gone), a pod without one is read again
    next time."""
    read = reader or read_agent_log
    core = CoreV1Api(cluster.api)
    with cluster.calling(f"pods of {namespace}/{name}"):
        pods = core.list_namespaced_pod(
            namespace, label_selector=f"{LABEL_SERVICE}={name}", _request_timeout=_REQUEST_TIMEOUT
        ).items
    running = [p for p in pods if p.metadata and p.status and p.status.phase == "Running"]
    live = {str(p.metadata.uid) for p in pods if p.metadata}
    for uid in [uid for uid in cache if uid not in live]:
        del cache[uid]
    out = []
    for pod in running:
        meta = pod.metadata
        assert meta is not None
        uid, pod_name = str(meta.uid), str(meta.name)
        node = str((pod.spec.node_name if pod.spec else None) or "")
        if uid in cache:
            out.append(cache[uid])
            continue
        try:
            observation = Observation(pod_name, node, report=parse_report(read(cluster, namespace, pod_name)))
        except (ClusterError, ReportError) as exc:
            observation = Observation(pod_name, node, problem=str(exc))
        if observation.report is not None:
            cache[uid] = observation
        out.append(observation)
    return out


def sandbox_condition(
    cluster: Cluster,
    namespace: str,
    name: str,
    cache: dict[str, Observation],
    stored: Iterable[Mapping[str, Any]],
    reader: LogReader | None = None,
) -> dict[str, str]:
    """The ``SandboxConfined`` condition now, given the ``stored`` conditions (kept while no pod
    runs; its ``lastTransitionTime`` kept while its status does not change)."""
    try:
        fresh = fold(observe(cluster, namespace, name, cache, reader))
    except ClusterError as exc:
        fresh = ("Unknown", "PodsUnreadable", f"cannot list the pods: {exc}")
    return settle(fresh, stored)


def settle(
    fresh: tuple[str, str, str], stored: Iterable[Mapping[str, Any]], now: datetime.datetime | None = None
) -> dict[str, str]:
    """The ``SandboxConfined`` condition for ``fresh`` (:func:`fold`'s answer) given the ``stored``
    conditions (see :func:`clrk.cluster.conditions.settle`)."""
    return conditions.settle(CONDITION, fresh, stored, now)


def kept(stored: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The stored ``SandboxConfined`` condition, for a status rewritten without reading pods."""
    return conditions.kept(CONDITION, stored)


def summary(conditions: Iterable[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """What a status patch is worth writing for: each condition's type and status, and the
    sandbox condition's message (it names pods and nodes that change without a status change)."""
    return [
        (c.get("type"), c.get("status"), c.get("message") if c.get("type") == CONDITION else None) for c in conditions
    ]
