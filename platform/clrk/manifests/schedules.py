"""Compile TaskSchedules into Knative Eventing PingSources. Pure functions, no I/O.

A PingSource posts its event to its sink and cannot add a header of its own (its adapter sends
the CloudEvent's headers only), and agent pods refuse requests the ingress did not sign. So the
sink is not the agent's Knative Service but the clrk ingress, at a URL that names the agent and
carries its schedule token (:func:`schedule_sink_uri`):
``http://clrk-ingress.clrk.svc.<cluster domain>/_clrk/schedules/<namespace>/<agent>/<token>``. The
ingress checks the token and runs the agent as for ``POST /`` (minted invocation id, deadline,
spans, signed forward).

The token is made from the platform key (:func:`clrk_runtime.protocol.keys.schedule_token`), which
only ``clrk apply`` and the operator read: compiled without it (``clrk render``, offline) the URL
holds :data:`TOKEN_PLACEHOLDER` instead, and :func:`with_schedule_token` puts the real one in at
apply. Whoever can read the PingSource (its namespace's readers) can run that one agent.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from clrk.api.schedules import TaskSchedule, schedule_path
from clrk.manifests.options import INGRESS_NAMESPACE, ClusterOptions
from clrk_runtime.protocol.keys import schedule_token

__all__ = [
    "INGRESS_SERVICE",
    "TOKEN_ANNOTATION",
    "TOKEN_PLACEHOLDER",
    "ping_source",
    "schedule_sink_uri",
    "with_schedule_token",
]

INGRESS_SERVICE = "clrk-ingress"
"""The ingress's Service in :data:`~clrk.manifests.options.INGRESS_NAMESPACE` (port 80;
``platform/config/ingress.yaml``)."""
TOKEN_PLACEHOLDER = "TOKEN-FILLED-IN-AT-APPLY"  # noqa: S105 (a placeholder, not a secret)
"""The sink URL's last segment in a PingSource compiled without the platform key."""
TOKEN_ANNOTATION = "clrk.dev/schedule-token"  # noqa: S105 (an annotation key)
"""Says where the sink URL's token comes from, on every compiled PingSource."""
_AGENT_LABEL = "clrk.dev/agent"
_MANAGED = {"app.kubernetes.io/managed-by": "clrk"}


def schedule_sink_uri(namespace: str, agent: str, options: ClusterOptions, platform_key: bytes | None) -> str:
    """Where the PingSource of a schedule for ``namespace/agent`` posts: the ingress's schedule
    route, with the agent's token (:data:`TOKEN_PLACEHOLDER` without ``platform_key``)."""
    token = TOKEN_PLACEHOLDER if platform_key is None else schedule_token(platform_key, namespace, agent)
    host = f"{INGRESS_SERVICE}.{INGRESS_NAMESPACE}.svc.{options.cluster_domain}"
    return f"http://{host}{schedule_path(namespace, agent, token)}"


def ping_source(
    schedule: TaskSchedule, options: ClusterOptions | None = None, platform_key: bytes | None = None
) -> dict[str, Any]:
    """The ``sources.knative.dev/v1`` PingSource that invokes the schedule's agent. Its events
    have Knative's type and source (:data:`~clrk.api.schedules.SCHEDULE_EVENT_TYPE`), which
    ``clrk dev`` copies; the time zone is explicit, a ``CRON_TZ=`` prefix moved into it. Its sink
    is :func:`schedule_sink_uri`."""
    spec, namespace = schedule.spec, schedule.metadata.namespace
    return {
        "apiVersion": "sources.knative.dev/v1",
        "kind": "PingSource",
        "metadata": {
            "name": schedule.metadata.name,
            "namespace": namespace,
            "labels": {
                _AGENT_LABEL: spec.agent,
                "clrk.dev/schedule": schedule.metadata.name,
                **_MANAGED,
            },
            "annotations": {
                TOKEN_ANNOTATION: "the sink URL's last segment is made from the platform key "
                "(clrk-system/clrk-platform-key) for this agent: clrk apply and the operator fill it in",
            },
        },
        "spec": {
            "schedule": spec.cron,
            "timezone": spec.zone,
            "contentType": "application/json",
            "data": json.dumps(spec.data, separators=(",", ":"), sort_keys=True),
            "sink": {"uri": schedule_sink_uri(namespace, spec.agent, options or ClusterOptions(), platform_key)},
        },
    }


def with_schedule_token(body: dict[str, Any], platform_key: bytes, options: ClusterOptions) -> dict[str, Any]:
    """A copy of the compiled PingSource ``body`` whose sink carries its agent's real token (the
    agent is the ``clrk.dev/agent`` label :func:`ping_source` sets); any other object unchanged."""
    if body.get("kind") != "PingSource" or not str(body.get("apiVersion", "")).startswith("sources.knative.dev/"):
        return body
    meta = body["metadata"]
    agent = (meta.get("labels") or {}).get(_AGENT_LABEL)
    if agent is None:
        return body  # not one clrk compiled (a document passed through as written)
    out = copy.deepcopy(body)
    out["spec"]["sink"] = {"uri": schedule_sink_uri(str(meta["namespace"]), str(agent), options, platform_key)}
    return out
