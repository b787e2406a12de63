"""``clrk get taskagents``, ``clrk logs``, and ``clrk apply --wait``: reading state back.

A TaskAgent's readiness is its Knative Service's ``Ready`` condition (the operator copies it onto
the TaskAgent's status; ``clrk apply`` without the operator leaves that empty, so both are read).
The REASON column also carries the operator's ``SandboxConfined`` condition when it is not True.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client import CoreV1Api

from clrk.cluster import warm_starts
from clrk.cluster.confinement import CONDITION
from clrk.cluster.connecting import Cluster
from clrk.errors import ClusterError

__all__ = [
    "AgentRow",
    "agent_rows",
    "format_table",
    "list_agents",
    "pod_logs",
    "ready_condition",
    "sandbox_notes",
    "wait_ready",
    "warm_start_notes",
]


@dataclass(frozen=True)
class AgentRow:
    namespace: str
    name: str
    image: str
    ready: str
    url: str
    reason: str


def ready_condition(body: dict[str, Any] | None) -> tuple[str, str]:
    """``("True"|"False"|"Unknown", reason)`` of a Knative Service, counting a stale status
    (observedGeneration behind generation) as Unknown."""
    if not body:
        return "Unknown", "no Knative Service yet"
    status = body.get("status") or {}
    if status.get("observedGeneration", 0) < body.get("metadata", {}).get("generation", 0):
        return "Unknown", "Knative has not seen the latest spec yet"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return str(condition.get("status", "Unknown")), str(condition.get("message") or condition.get("reason", ""))
    return "Unknown", "no Ready condition yet"


def agent_rows(agents: list[dict[str, Any]], services: dict[tuple[str, str], dict[str, Any]]) -> list[AgentRow]:
    rows = []
    for agent in agents:
        meta = agent["metadata"]
        key = (meta["namespace"], meta["name"])
        service = services.get(key)
        ready, reason = ready_condition(service)
        url = str(((service or {}).get("status") or {}).get("url", ""))
        image = str(agent.get("spec", {}).get("template", {}).get("spec", {}).get("image", ""))
        notes = [reason] if ready != "True" and reason else []
        notes += sandbox_notes(agent)
        notes += warm_start_notes(agent)
        rows.append(AgentRow(key[0], key[1], image, ready, url, "; ".join(notes)))
    return sorted(rows, key=lambda row: (row.namespace, row.name))


def sandbox_notes(agent: dict[str, Any]) -> list[str]:
    """The operator's ``SandboxConfined`` condition (:mod:`~clrk.cluster.confinement`) when it is
    not True: which Landlock pieces the agent's pods' sandboxes lack, or why that is not known."""
    for found in (agent.get("status") or {}).get("conditions") or []:
        if found.get("type") == CONDITION and found.get("status") != "True":
            return [f"sandbox: {found.get('message') or found.get('reason') or found.get('status')}"]
    return []


def warm_start_notes(agent: dict[str, Any]) -> list[str]:
    """The operator's ``WarmStarted`` condition (:mod:`~clrk.cluster.warm_starts`) when it is
    False: warm start failing in some pods (they start the agent on request), and why."""
    for found in (agent.get("status") or {}).get("conditions") or []:
        if found.get("type") == warm_starts.CONDITION and found.get("status") == "False":
            return [f"warm start: {found.get('message') or found.get('reason')}"]
    return []


def format_table(rows: list[AgentRow], namespaces: bool) -> str:
    head = (["NAMESPACE"] if namespaces else []) + ["NAME", "READY", "URL", "IMAGE", "REASON"]
    body = [([r.namespace] if namespaces else []) + [r.name, r.ready, r.url or "-", r.image, r.reason] for r in rows]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    lines = ["   ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in [head, *body]]
    return "\n".join(line.rstrip() for line in lines)


def list_agents(cluster: Cluster, namespace: str | None) -> list[AgentRow]:
    agents = cluster.resource("clrk.dev/v1alpha1", "TaskAgent")
    with cluster.calling("TaskAgents (listing)"):
        found = agents.get(namespace=namespace).to_dict().get("items", [])
    services: dict[tuple[str, str], dict[str, Any]] = {}
    if found:
        kservice = cluster.resource("serving.knative.dev/v1", "Service")
        with cluster.calling("Knative Services (listing)"):
            for body in kservice.get(namespace=namespace).to_dict().get("items", []):
                services[(body["metadata"]["namespace"], body["metadata"]["name"])] = body
    return agent_rows(found, services)


def wait_ready(
    cluster: Cluster,
    targets: list[tuple[str, str]],
    report: Callable[[str], None],
    timeout: float = 300.0,
    interval: float = 1.0,
) -> dict[tuple[str, str], str]:
    """Poll each Knative Service until Ready; report each change of reason; return the URLs."""
    kservice = cluster.resource("serving.knative.dev/v1", "Service")
    deadline = time.monotonic() + timeout
    urls: dict[tuple[str, str], str] = {}
    last: dict[tuple[str, str], str] = {}
    while True:
        for namespace, name in targets:
            if (namespace, name) in urls:
                continue
            body = cluster.read(kservice, name, namespace)
            ready, reason = ready_condition(body)
            if ready == "True":
                urls[(namespace, name)] = str(body["status"].get("url", "")) if body else ""
                report(f"{namespace}/{name} ready: {urls[(namespace, name)]}")
            elif last.get((namespace, name)) != reason:
                last[(namespace, name)] = reason
                report(f"{namespace}/{name} waiting: {reason or ready}")
        if len(urls) == len(targets):
            return urls
        if time.monotonic() > deadline:
            stuck = ", ".join(f"{ns}/{n} ({last.get((ns, n), '?')})" for ns, n in targets if (ns, n) not in urls)
            raise ClusterError(f"not ready after {timeout:g}s: {stuck}; see `kubectl describe ksvc` and `clrk logs`")
        time.sleep(interval)


def pod_logs(cluster: Cluster, name: str, namespace: str, tail: int | None = None) -> list[tuple[str, str]]:
    """``(pod, log)`` of the agent container of each pod serving TaskAgent ``namespace/name``."""
    core = CoreV1Api(cluster.api)
    with cluster.calling(f"pods of {namespace}/{name}"):
        pods = core.list_namespaced_pod(namespace, label_selector=f"serving.knative.dev/service={name}").items
    if not pods:
        raise ClusterError(
            f"no pods serve TaskAgent {namespace}/{name}: it scales to zero when idle; send it a request, "
            "or keep pods up with spec.warmPoolSize"
        )
    out = []
    for pod in sorted(str(pod.metadata.name) for pod in pods if pod.metadata):
        with cluster.calling(f"logs of pod {namespace}/{pod}"):
            text = core.read_namespaced_pod_log(pod, namespace, container="agent", tail_lines=tail)
        out.append((pod, str(text)))
    return out
