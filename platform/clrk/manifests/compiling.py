"""Compile TaskAgents into Knative objects (TaskSchedules: :mod:`.schedules`). Pure functions, no I/O.

A TaskAgent becomes a Knative Service whose pod runs our runtime shim in the agent's own image:
an init container copies the shim (a self-contained tree) into an emptyDir, and the agent's
container runs the shim, which execs the agent's entrypoint once per request in a fresh sandbox.

Scaling. The shim runs several sandboxes per pod, so Knative's ``containerConcurrency`` is the
number of sandboxes one pod runs at once: the largest divisor of ``maxConcurrency`` not above
:data:`SANDBOXES_PER_POD` that still leaves ``max-scale`` (``maxConcurrency`` divided by it) at
least ``min-scale``, so that ``max-scale * containerConcurrency`` equals ``maxConcurrency`` exactly
and Knative's webhook (``max-scale`` ≥ ``min-scale``) accepts the pair. ``min-scale`` (and
``initial-scale``) is ``warmPoolSize``, and every pod keeps one sandbox warm, so ``warmPoolSize``
sandboxes wait ready across the Service; the model refuses a ``maxConcurrency`` below
``warmPoolSize``, the one case no divisor fits.

Warm start. ``spec.warmStart`` sets the shim's ``CLRK_WARM_START``: each warm sandbox (one per pod,
``warmPoolSize`` pods at least) starts the agent's entrypoint before its request. Nothing else in
the objects changes: the pod is the same, only its shim starts agents earlier.

Timeouts. A buffered answer starts only when the agent exits: Knative's ``timeoutSeconds`` and
``responseStartTimeoutSeconds`` are both ``spec.timeout`` (whole seconds, rounded up: Knative
would otherwise apply its ``revision-response-start-timeout-seconds`` default, 300 s, to longer
agents) plus :data:`KNATIVE_TIMEOUT_MARGIN_S`, and the shim's own ``--timeout`` is the exact value.
The margin lets the shim's deadline come first: queue-proxy's clock starts before the shim's, and
with the two equal queue-proxy won the race (checked against Knative's real queue-proxy), cutting a
buffered call with its own plain-text ``504 request timeout`` and a stream with raw bytes and no
``outcome`` event, where the shim's answer says ``deadline_exceeded`` in clrk's shape.

Security. The agent never runs as root: each sandbox gets an unprivileged uid of its own (65534
inside bubblewrap). The shim keeps uid 0 in the container only to switch to those uids, kill the
agent's process tree and remove what it left (``SHIM_CAPABILITIES``; a test runs the real shim
with only those): every other capability is dropped, privilege escalation is off, seccomp is
RuntimeDefault, and ``runAsNonRoot: false`` is said outright (Knative's ``secure-pod-defaults``
would otherwise set it to true, and kubelet would refuse to start a root container). That split is
what keeps the namespace's keys (mounted for the shim, mode 0400: :mod:`.tenancy`) out of the
agent's reach. Knative must allow init containers, added capabilities, a pod securityContext and
emptyDir volumes (``clrk install`` sets those feature flags). The pod needs the ``baseline`` Pod Security level
(its added capabilities are all on baseline's list; ``restricted`` forbids root and any added
capability but NET_BIND_SERVICE): ``clrk apply`` labels agent namespaces so.

Reachability. The Service carries ``networking.knative.dev/visibility: cluster-local``: Knative
publishes it inside the cluster only, where the clrk ingress calls it; the shim refuses requests
the ingress did not sign (``CLRK_REQUEST_KEY_FILE``); the namespace's NetworkPolicies
(:mod:`.tenancy`) say who may connect to the pod.

Storage. Plain sandboxes keep their HOME, TMPDIR and work folder under the shim's temp root: an
emptyDir with a ``sizeLimit`` (:data:`SANDBOX_DIR`, ``CLRK_TEMP_ROOT``), not the pod's 64 MiB
``/dev/shm``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from datetime import timedelta
from typing import Any

from clrk.api import TaskAgent
from clrk.manifests.options import INGRESS_NAMESPACE, RUNTIME_RESOURCES, ClusterOptions
from clrk.manifests.schedules import ping_source
from clrk.manifests.tenancy import AGENT_KEYS_DIR, CLUSTER_LOCAL, VISIBILITY_LABEL, key_files
from clrk_runtime.protocol.invocations import MAX_ASYNC_TIMEOUT_S

__all__ = [
    "INGRESS_NAMESPACE",
    "KNATIVE_MAX_TIMEOUT_S",
    "KNATIVE_TIMEOUT_MARGIN_S",
    "SANDBOXES_PER_POD",
    "SANDBOX_DIR",
    "ingress_service",
    "ingress_service_name",
    "knative_service",
    "ping_source",
    "scaling",
    "shim_seconds",
    "whole_seconds",
]

KNATIVE_TIMEOUT_MARGIN_S = 10
"""Seconds Knative's request timeouts wait past an agent's ``spec.timeout``, for the shim's own
answer at its deadline to reach the caller first."""
KNATIVE_MAX_TIMEOUT_S = int(MAX_ASYNC_TIMEOUT_S) + KNATIVE_TIMEOUT_MARGIN_S
"""The ``max-revision-timeout-seconds`` ``clrk install`` gives Knative Serving: the longest
``timeoutSeconds`` an agent compiles to."""

SANDBOXES_PER_POD = 4
SANDBOX_DIR = "/var/lib/clrk/sandboxes"
"""The shim's temp root in an agent pod: an emptyDir of its own."""

SHIM_CAPABILITIES = ("SETUID", "SETGID", "KILL", "CHOWN", "FOWNER", "DAC_OVERRIDE")
"""All the shim's container keeps (every other one is dropped): switching to the sandboxes' uids,
killing their processes, handing them their directories and removing what they left in them
(each sandbox's are its own uid's, mode 0700: root needs DAC_OVERRIDE to go in). Agents run as
those uids, which no capability follows across the exec."""
_RUNTIME_DIR = "/opt/clrk"
_CA_DIR = "/var/run/clrk/ca"
_MANAGED = {"app.kubernetes.io/managed-by": "clrk"}


def scaling(max_concurrency: int | None, warm_pool_size: int = 0) -> tuple[int, int | None]:
    """``(containerConcurrency, max-scale)`` for a TaskAgent's ``maxConcurrency``, with max-scale
    at least ``warm_pool_size`` (the min-scale) whenever ``maxConcurrency`` allows it."""
    if max_concurrency is None:
        return SANDBOXES_PER_POD, None
    divisors = [d for d in range(1, SANDBOXES_PER_POD + 1) if max_concurrency % d == 0]
    fitting = [d for d in divisors if max_concurrency // d >= warm_pool_size] or [1]
    per_pod = max(fitting)
    return per_pod, max_concurrency // per_pod


def whole_seconds(value: timedelta) -> int:
    """``value`` as the whole seconds a Knative field takes: rounded up, at least 1."""
    return max(1, math.ceil(value / timedelta(seconds=1)))


def shim_seconds(value: timedelta) -> str:
    """``value`` exactly, as the shim's ``--timeout`` reads it: ``100s``, ``0.25s``, ``90.5s``."""
    whole, fraction = divmod(value // timedelta(microseconds=1), 1_000_000)
    return (f"{whole}.{fraction:06d}".rstrip("0") if fraction else str(whole)) + "s"


def ingress_service_name(namespace: str, name: str) -> str:
    """``clrk-<namespace>-<name>``: one Service per agent in the ingress namespace, where agents
    of every namespace meet. When the namespace holds a ``-`` (``team-a``/``bot`` and
    ``team``/``a-bot`` would read alike) or the name would pass 63 characters, the readable part
    (cut to fit) is followed by 8 hex digits of a SHA-256 of ``namespace/name``."""
    plain = f"clrk-{namespace}-{name}"
    if "-" not in namespace and len(plain) <= 63:
        return plain
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:8]
    return f"{plain[: 63 - 9].rstrip('-')}-{digest}"


def _labels(agent: TaskAgent) -> dict[str, str]:
    return {"clrk.dev/agent": agent.metadata.name, **_MANAGED}


def knative_service(agent: TaskAgent, argv: list[str], options: ClusterOptions) -> dict[str, Any]:
    """The ``serving.knative.dev/v1`` Service that serves ``agent``; ``argv`` is its entrypoint."""
    spec = agent.spec
    per_pod, max_scale = scaling(spec.max_concurrency, spec.warm_pool_size)
    annotations = {"autoscaling.knative.dev/min-scale": str(spec.warm_pool_size)}
    if spec.warm_pool_size:
        annotations["autoscaling.knative.dev/initial-scale"] = str(spec.warm_pool_size)
    if max_scale is not None:
        annotations["autoscaling.knative.dev/max-scale"] = str(max_scale)
    shim_args = [
        "--timeout", shim_seconds(spec.timeout),
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
        **key_files(),
        "CLRK_TEMP_ROOT": SANDBOX_DIR,
    }
    if spec.warm_start:
        env["CLRK_WARM_START"] = "true"
    resources = spec.resources.as_kubernetes() if spec.resources is not None else options.agent_resources
    container = {
        "name": "agent",
        "image": agent.container.image,
        "command": [f"{_RUNTIME_DIR}/bin/clrk-shim"],
        "args": shim_args,
        "ports": [{"name": "http1", "containerPort": 8080}],
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "resources": copy.deepcopy(resources),
        "readinessProbe": {"httpGet": {"path": "/readyz"}, "periodSeconds": 1},
        "livenessProbe": {"httpGet": {"path": "/livez"}},
        "volumeMounts": [
            {"name": "clrk-runtime", "mountPath": _RUNTIME_DIR, "readOnly": True},
            {"name": "clrk-ca", "mountPath": _CA_DIR, "readOnly": True},
            {"name": "clrk-keys", "mountPath": AGENT_KEYS_DIR, "readOnly": True},
            {"name": "clrk-sandboxes", "mountPath": SANDBOX_DIR},
        ],
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
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
        "resources": copy.deepcopy(RUNTIME_RESOURCES),
        "volumeMounts": [{"name": "clrk-runtime", "mountPath": _RUNTIME_DIR}],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    seconds = whole_seconds(spec.timeout) + KNATIVE_TIMEOUT_MARGIN_S
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            "name": agent.metadata.name,
            "namespace": agent.metadata.namespace,
            "labels": {**_labels(agent), VISIBILITY_LABEL: CLUSTER_LOCAL},
        },
        "spec": {
            "template": {
                "metadata": {"labels": _labels(agent), "annotations": annotations},
                "spec": {
                    "containerConcurrency": per_pod,
                    "timeoutSeconds": seconds,
                    "responseStartTimeoutSeconds": seconds,
                    "enableServiceLinks": False,
                    "automountServiceAccountToken": False,
                    "securityContext": {"fsGroup": 65532},
                    "initContainers": [copier],
                    "containers": [container],
                    "volumes": [
                        {"name": "clrk-runtime", "emptyDir": {}},
                        {"name": "clrk-ca", "configMap": {"name": options.ca_configmap}},
                        {
                            "name": "clrk-keys",
                            "secret": {"secretName": options.agent_keys_secret, "defaultMode": 0o400},
                        },
                        {"name": "clrk-sandboxes", "emptyDir": {"sizeLimit": options.sandbox_size}},
                    ],
                },
            }
        },
    }


def ingress_service(agent: TaskAgent) -> dict[str, Any]:
    """The agent's Service in the ingress namespace (:func:`ingress_service_name`), so that
    ``kubectl port-forward -n clrk svc/<it> 18080:80`` reaches the ingress."""
    namespace, name = agent.metadata.namespace, agent.metadata.name
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": ingress_service_name(namespace, name),
            "namespace": INGRESS_NAMESPACE,
            "labels": {**_labels(agent), "clrk.dev/namespace": namespace},
            "annotations": {"clrk.dev/agent-ref": agent.ref},
        },
        "spec": {
            "selector": {"app.kubernetes.io/name": "clrk-ingress"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
        },
    }
