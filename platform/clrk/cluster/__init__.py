"""The cluster path: apply manifests to Kubernetes + Knative, install the platform, build images,
and the operator that does what ``clrk apply`` does for objects applied by other tools."""

from clrk.cluster.applying import FIELD_MANAGER, ApplyOptions, apply_plan, delete_plan
from clrk.cluster.connecting import Cluster, connect
from clrk.cluster.installing import install
from clrk.cluster.listing import format_table, list_agents, pod_logs, wait_ready
from clrk.cluster.planning import Plan, apply_set_id, plan_apply

__all__ = [
    "FIELD_MANAGER",
    "ApplyOptions",
    "Cluster",
    "Plan",
    "apply_plan",
    "apply_set_id",
    "connect",
    "delete_plan",
    "format_table",
    "install",
    "list_agents",
    "plan_apply",
    "pod_logs",
    "wait_ready",
]
