"""Compile TaskAgents and TaskSchedules into Knative objects. Pure functions, no I/O.

A TaskAgent becomes a Knative Service whose pod runs our runtime shim in the agent's own image:
an init container copies the shim (a self-contained tree) into an emptyDir, and the agent's
container runs the shim, which execs the agent's entrypoint once per request in a fresh sandbox.

Scaling. The shim runs several sandboxes per pod, so Knative's ``containerConcurrency`` is the
number of sandboxes one pod runs at once: the largest divisor of ``maxConcurrency`` not above
:data:`SANDBOXES_PER_POD`, so that ``max-scale * containerConcurrency`` equals ``maxConcurrency``
exactly and never exceeds it. ``min-scale`` (and ``initial-scale``) is ``warmPoolSize``, and every
pod keeps one sandbox warm, so ``warmPoolSize`` sandboxes wait ready across the Service.

Security. The agent never runs as root: each sandbox gets an unprivileged uid of its own (65534
inside bubblewrap). The shim keeps uid 0 in the container only to switch to those uids, kill the
agent's process tree and remove what it left (``SHIM_CAPABILITIES``; a test runs the real shim
with only those): every other capability is dropped, privilege escalation is off, seccomp is
RuntimeDefault. That split is what keeps the egress token
key (mounted for the shim, mode 0400) out of the agent's reach. Knative must allow init containers
and added capabilities (``clrk install`` sets both feature flags).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from clrk import __version__
from clrk.api import TaskAgent
from clrk.api.schedules import TaskSchedule
from clrk.manifests.policies import SYSTEM_NAMESPACE

__all__ = [
    "INGRESS_NAMESPACE",
    "SANDBOXES_PER_POD",
    "ClusterOptions",
    "ingress_service",
    "knative_service",
    "ping_source",
    "scaling",
]

SANDBOXES_PER_POD = 4
INGRESS_NAMESPACE = "clrk"
"""Where the ingress and the per-agent ``clrk-<name>`` Services live (callers' side)."""

SHIM_CAPABILITIES = ("SETUID", "SETGID", "KILL", "CHOWN", "FOWNER", "DAC_OVERRIDE")
"""All the shim's container keeps (every other one is dropped): switching to the sandboxes' uids,
killing their processes, handing them their directories and removing what they left in them
(each sandbox's are its own uid's, mode 0700: root needs DAC_OVERRIDE to go in). Agents run as
those uids, which no capability follows across the exec."""
_RUNTIME_DIR = "/opt/clrk"
_CA_DIR = "/var/run/clrk/ca"
_TOKEN_DIR = "/var/run/clrk/egress-token"  # noqa: S105 (a path, not a secret)
_MANAGED = {"app.kubernetes.io/managed-by": "clrk"}


@dataclass(frozen=True)
class ClusterOptions:
    """Where the platform's pieces are, as ``clrk install`` lays them out."""

    runtime_image: str = f"ghcr.io/clrk-dev/clrk-runtime:{__version__}"
    egress_proxy: str = f"clrk-egress.{SYSTEM_NAMESPACE}.svc.cluster.local:3128"
    ca_configmap: str = "clrk-ca"
    token_secret: str = "clrk-egress-token"  # noqa: S105 (a Secret's name)


def scaling(max_concurrency: int | None) -> tuple[int, int | None]:
    """``(containerConcurrency, max-scale)`` for a TaskAgent's ``maxConcurrency``."""
    if max_concurrency is None:
        return SANDBOXES_PER_POD, None
    per_pod = max(d for d in range(1, SANDBOXES_PER_POD + 1) if max_concurrency % d == 0)
    return per_pod, max_concurrency // per_pod


def _labels(agent: TaskAgent) -> dict[str, str]:
    return {"clrk.dev/agent": agent.metadata.name, **_MANAGED}


def knative_service(agent: TaskAgent, argv: list[str], options: ClusterOptions) -> dict[str, Any]:
    """The ``serving.knative.dev/v1`` Service that serves ``agent``; ``argv`` is its entrypoint."""
    spec = agent.spec
    per_pod, max_scale = scaling(spec.max_concurrency)
    annotations = {"autoscaling.knative.dev/min-scale": str(spec.warm_pool_size)}
    if spec.warm_pool_size:
        annotations["autoscaling.knative.dev/initial-scale"] = str(spec.warm_pool_size)
    if max_scale is not None:
        annotations["autoscaling.knative.dev/max-scale"] = str(max_scale)
    shim_args = [
        "--timeout", f"{spec.timeout.total_seconds():g}s",
        "--warm-pool", "1" if spec.warm_pool_size else "0",
        "--max-concurrency", str(per_pod),
        "--sandbox", "plain",
        "--", *argv,
    ]  # fmt: skip
    env = {
        "CLRK_AGENT": agent.ref,
        "CLRK_AGENT_ENV": json.dumps(agent.env, separators=(",", ":")),
        "CLRK_EGRESS_PROXY": options.egress_proxy,
        "CLRK_CA_BUNDLE": f"{_CA_DIR}/ca-bundle.crt",
        "CLRK_EGRESS_TOKEN_KEY_FILE": f"{_TOKEN_DIR}/key",
    }
    container = {
        "name": "agent",
        "image": agent.container.image,
        "command": [f"{_RUNTIME_DIR}/bin/clrk-shim"],
        "args": shim_args,
        "ports": [{"name": "http1", "containerPort": 8080}],
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "readinessProbe": {"httpGet": {"path": "/readyz"}, "periodSeconds": 1},
        "livenessProbe": {"httpGet": {"path": "/livez"}},
        "volumeMounts": [
            {"name": "clrk-runtime", "mountPath": _RUNTIME_DIR, "readOnly": True},
            {"name": "clrk-ca", "mountPath": _CA_DIR, "readOnly": True},
            {"name": "clrk-egress-token", "mountPath": _TOKEN_DIR, "readOnly": True},
        ],
        "securityContext": {
            "runAsUser": 0,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": False,
            "capabilities": {
                "drop": ["ALL"],
                "add": list(SHIM_CAPABILITIES),
            },
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    copier = {
        "name": "clrk-runtime",
        "image": options.runtime_image,
        "command": ["cp", "-a", "/clrk/.", f"{_RUNTIME_DIR}/"],
        "volumeMounts": [{"name": "clrk-runtime", "mountPath": _RUNTIME_DIR}],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            "name": agent.metadata.name,
            "namespace": agent.metadata.namespace,
            "labels": _labels(agent),
        },
        "spec": {
            "template": {
                "metadata": {"labels": _labels(agent), "annotations": annotations},
                "spec": {
                    "containerConcurrency": per_pod,
                    "timeoutSeconds": int(spec.timeout.total_seconds()),
                    "enableServiceLinks": False,
                    "automountServiceAccountToken": False,
                    "securityContext": {"fsGroup": 65532},
                    "initContainers": [copier],
                    "containers": [container],
                    "volumes": [
                        {"name": "clrk-runtime", "emptyDir": {}},
                        {"name": "clrk-ca", "configMap": {"name": options.ca_configmap}},
                        {
                            "name": "clrk-egress-token",
                            "secret": {"secretName": options.token_secret, "defaultMode": 0o400},
                        },
                    ],
                },
            }
        },
    }


def ingress_service(agent: TaskAgent) -> dict[str, Any]:
    """``Service clrk-<name>`` in the ingress namespace, so that
    ``kubectl port-forward -n clrk svc/clrk-<name> 18080:80`` reaches the ingress."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": f"clrk-{agent.metadata.name}",
            "namespace": INGRESS_NAMESPACE,
            "labels": _labels(agent),
            "annotations": {"clrk.dev/agent-ref": agent.ref},
        },
        "spec": {
            "selector": {"app.kubernetes.io/name": "clrk-ingress"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
        },
    }


def ping_source(schedule: TaskSchedule) -> dict[str, Any]:
    """The ``sources.knative.dev/v1`` PingSource that invokes the schedule's agent."""
    spec = schedule.spec
    return {
        "apiVersion": "sources.knative.dev/v1",
        "kind": "PingSource",
        "metadata": {
            "name": schedule.metadata.name,
            "namespace": schedule.metadata.namespace,
            "labels": {
                "clrk.dev/agent": spec.agent,
                "clrk.dev/schedule": schedule.metadata.name,
                **_MANAGED,
            },
        },
        "spec": {
            "schedule": spec.schedule,
            "timezone": spec.time_zone,
            "contentType": "application/json",
            "data": json.dumps(spec.data, separators=(",", ":"), sort_keys=True),
            "sink": {
                "ref": {
                    "apiVersion": "serving.knative.dev/v1",
                    "kind": "Service",
                    "name": spec.agent,
                }
            },
        },
    }
