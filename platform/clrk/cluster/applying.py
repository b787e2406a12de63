"""``clrk apply`` and ``clrk delete``: send a :class:`~clrk.cluster.planning.Plan` to a cluster.

Server-side apply (field manager ``clrk``), clrk objects first so that what they compile to can
carry owner references to their uids. Each change is reported through ``report`` as one line
(``taskagent default/jq-bot configured``). Every refusal becomes a ClusterError naming the object
and the manifest it came from.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from kubernetes.client.exceptions import ApiException

from clrk.cluster.configs import agent_namespace_objects, pod_security_labels
from clrk.cluster.connecting import Cluster
from clrk.cluster.merging import merged_egress_config, selector
from clrk.cluster.planning import LABEL_APPLY_SET, LABEL_MANAGED, Key, Owner, Plan, key_of, stale, tie_to_owner
from clrk.errors import ClusterError
from clrk.manifests.policies import SYSTEM_NAMESPACE

__all__ = ["FIELD_MANAGER", "Applier", "ApplyOptions", "apply_plan", "delete_plan", "unchanged"]

FIELD_MANAGER = "clrk"
SHARED = (("v1", "ConfigMap", "clrk-ca"), ("v1", "Secret", "clrk-egress-token"))
"""What every agent's pod mounts from its own namespace, copied there from clrk-system."""
_RECORD = "clrk-applyset-"
_ALWAYS_SCANNED = [
    ("clrk.dev/v1alpha1", kind) for kind in ("TaskAgent", "CredentialInjectionPolicy", "TaskSchedule", "Caller")
] + [("serving.knative.dev/v1", "Service"), ("v1", "Service"), ("v1", "ConfigMap")]

Report = Callable[[str], None]


@dataclass(frozen=True)
class ApplyOptions:
    dry_run: Literal["none", "server"] = "none"
    prune: bool = False
    force_conflicts: bool = False
    namespace: str = "default"
    """Namespace for objects of other kinds that name none (``-n``)."""


def unchanged(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether an apply changed nothing but bookkeeping (resourceVersion, managedFields times)."""

    def strip(body: dict[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in body.get("metadata", {}).items() if k != "resourceVersion"}
        meta["managedFields"] = [{k: v for k, v in f.items() if k != "time"} for f in meta.get("managedFields") or []]
        return {**body, "metadata": meta}

    return strip(before) == strip(after)


def _kind(api_version: str, kind: str) -> str:
    """kubectl's spelling: ``service`` for core kinds, ``service.serving.knative.dev`` otherwise."""
    group = api_version.rpartition("/")[0]
    return f"{kind.lower()}.{group}" if group else kind.lower()


class Applier:
    """Applies and deletes single objects, reporting each change."""

    def __init__(self, cluster: Cluster, options: ApplyOptions, report: Report) -> None:
        self.cluster, self.options, self.report = cluster, options, report
        self.suffix = " (server dry run)" if options.dry_run == "server" else ""

    def _kwargs(self) -> dict[str, Any]:
        return {"dry_run": "All"} if self.options.dry_run == "server" else {}

    def get(self, resource: Any, name: str, namespace: str | None) -> dict[str, Any] | None:
        return self.cluster.read(resource, name, namespace)

    def apply(self, body: dict[str, Any], source: str) -> dict[str, Any]:
        api_version, kind, namespace, name = key_of(body)
        resource = self.cluster.resource(api_version, kind)
        if resource.namespaced and not namespace:
            body = {**body, "metadata": {**body["metadata"], "namespace": self.options.namespace}}
            namespace = self.options.namespace
        what = f"{kind} {namespace}/{name}" if resource.namespaced else f"{kind} {name}"
        before = self.get(resource, name, namespace if resource.namespaced else None)
        force = self.options.force_conflicts or None
        with self.cluster.calling(what, source):
            if before is None:
                after = resource.server_side_apply(
                    body=body, field_manager=FIELD_MANAGER, force_conflicts=force, **self._kwargs()
                )
            else:
                # A dry run first: some servers (1.20) store a no-op apply anyway, bumping the
                # resourceVersion (a new managedFields time) and re-rolling nothing but watchers.
                after = resource.server_side_apply(
                    body=body, field_manager=FIELD_MANAGER, force_conflicts=force, dry_run="All"
                )
                if not unchanged(before, after.to_dict()) and self.options.dry_run == "none":
                    after = resource.server_side_apply(body=body, field_manager=FIELD_MANAGER, force_conflicts=force)
        live = dict(after.to_dict())
        action = "created" if before is None else "unchanged" if unchanged(before, live) else "configured"
        self.report(f"{_kind(api_version, kind)} {what.split(' ', 1)[1]} {action}{self.suffix}")
        return before if before is not None and action == "unchanged" else live

    def delete(self, body: dict[str, Any], verb: str) -> None:
        api_version, kind, namespace, name = key_of(body)
        resource = self.cluster.resource(api_version, kind)
        try:
            with self.cluster.calling(f"{kind} {namespace}/{name}", missing_ok=True):
                resource.delete(
                    name=name,
                    namespace=namespace or None,
                    propagation_policy="Background",
                    **self._kwargs(),
                )
        except ApiException:
            return
        where = f"{namespace}/{name}" if namespace else name
        self.report(f"{_kind(api_version, kind)} {where} {verb}{self.suffix}")

    def dns_addresses(self) -> list[str]:
        """The kube-dns Service's ClusterIP, where NodeLocal DNSCache (iptables mode) answers; none
        when there is no such Service or it cannot be read."""
        try:
            service = self.get(self.cluster.resource("v1", "Service"), "kube-dns", "kube-system")
        except ClusterError:
            return []
        address = str(((service or {}).get("spec") or {}).get("clusterIP") or "")
        return [address] if address and address != "None" else []

    def label_namespace(self, namespace: str) -> None:
        """The Pod Security level agent pods need, on their namespace (when it enforces none).
        A namespace this user may not read or label is left as it is, with a note: the pods run
        wherever no stricter level is enforced."""
        try:
            current = self.get(self.cluster.resource("v1", "Namespace"), namespace, None)
        except ClusterError as exc:
            self.report(f"note: namespace {namespace} not labelled ({exc}); agent pods need Pod Security 'baseline'")
            return
        if current is None:
            return  # gone, or a server dry run: the namespace is checked with the agents themselves
        labels = pod_security_labels(namespace, (current.get("metadata") or {}).get("labels") or {})
        if not labels:
            return
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}}
        try:
            self.apply(body, "the Pod Security level of agent pods")
        except ClusterError as exc:
            self.report(f"note: namespace {namespace} not labelled ({exc}); agent pods need Pod Security 'baseline'")

    def prepare_namespaces(self, namespaces: set[str]) -> None:
        """In each agent namespace: its Pod Security label, the CA ConfigMap and the egress token
        Secret (copied from clrk-system), and the NetworkPolicy that fences agent pods."""
        dns = self.dns_addresses()
        for namespace in sorted(namespaces):
            self.label_namespace(namespace)
            for body in agent_namespace_objects(namespace, dns):
                self.apply(body, "platform/config/agent-namespace.yaml")
        for api_version, kind, name in SHARED:
            resource = self.cluster.resource(api_version, kind)
            original = self.get(resource, name, SYSTEM_NAMESPACE)
            if original is None:
                raise ClusterError(
                    f"{kind} {SYSTEM_NAMESPACE}/{name} is missing: the platform is not installed "
                    "on this cluster; run `clrk install`"
                )
            for namespace in sorted(namespaces - {SYSTEM_NAMESPACE}):
                copy: dict[str, Any] = {
                    "apiVersion": api_version,
                    "kind": kind,
                    "metadata": {
                        "name": name,
                        "namespace": namespace,
                        "labels": {LABEL_MANAGED: "clrk", "clrk.dev/copied-from": SYSTEM_NAMESPACE},
                    },
                    **{k: original[k] for k in ("data", "type") if k in original},
                }
                self.apply(copy, f"{kind} {SYSTEM_NAMESPACE}/{name}")

    def sync_egress_config(self) -> None:
        """Rewrite the gateway's one config file from every per-object egress ConfigMap."""
        configmaps = self.cluster.resource("v1", "ConfigMap")
        with self.cluster.calling("egress ConfigMaps (listing)"):
            found = configmaps.get(namespace=SYSTEM_NAMESPACE, label_selector=selector()).to_dict()
        self.apply(merged_egress_config(found.get("items", [])), "the merged egress configuration")

    def live(self, apply_set: str, kinds: set[tuple[str, str]]) -> list[dict[str, Any]]:
        selector = f"{LABEL_MANAGED}=clrk,{LABEL_APPLY_SET}={apply_set}"
        found = []
        for api_version, kind in sorted(kinds):
            try:
                resource = self.cluster.resource(api_version, kind)
            except ClusterError:
                continue  # a kind the cluster no longer serves holds nothing to prune
            with self.cluster.calling(f"{kind} (listing)"):
                listed = resource.get(label_selector=selector).to_dict()
            for body in listed.get("items", []):
                found.append({**body, "apiVersion": api_version, "kind": kind})
        return found

    def recorded_kinds(self, apply_set: str) -> set[tuple[str, str]]:
        record = self.get(self.cluster.resource("v1", "ConfigMap"), _RECORD + apply_set, SYSTEM_NAMESPACE) or {}
        kinds = json.loads((record.get("data") or {}).get("kinds", "[]"))
        return {(str(a), str(k)) for a, k in kinds}

    def record(self, apply_set: str, kinds: set[tuple[str, str]]) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": _RECORD + apply_set, "namespace": SYSTEM_NAMESPACE, "labels": {LABEL_MANAGED: "clrk"}},
            "data": {"kinds": json.dumps(sorted(kinds))},
        }
        self.apply(body, "the apply-set record")


def apply_plan(cluster: Cluster, plan: Plan, options: ApplyOptions, report: Report) -> list[dict[str, Any]]:
    """Apply ``plan``; returns the objects as the cluster holds them (or would, in a dry run)."""
    session = Applier(cluster, options, report)
    applied: list[dict[str, Any]] = []
    uids: dict[Owner, str] = {}
    for item in plan.parents:
        live = session.apply(item.body, item.source)
        uids[(item.key[1], item.key[2], item.key[3])] = str(live["metadata"].get("uid", ""))
        applied.append(live)
    agent_namespaces = {item.key[2] for item in plan.parents if item.key[1] == "TaskAgent"}
    if agent_namespaces:
        session.prepare_namespaces(agent_namespaces)
    for item in plan.children:
        applied.append(session.apply(tie_to_owner(item, uids), item.source))
    kinds = {(item.key[0], item.key[1]) for item in plan.items}
    if options.prune:
        scanned = kinds | set(_ALWAYS_SCANNED) | session.recorded_kinds(plan.apply_set)
        desired: set[Key] = {key_of(body) for body in applied}
        for body in stale(session.live(plan.apply_set, scanned), desired):
            session.delete(body, "pruned")
    if options.dry_run == "none":
        session.sync_egress_config()
        session.record(plan.apply_set, kinds | (session.recorded_kinds(plan.apply_set) if not options.prune else set()))
    return applied


def delete_plan(cluster: Cluster, plan: Plan, report: Report) -> None:
    """Delete what ``plan`` names: compiled objects first, then the clrk objects."""
    session = Applier(cluster, ApplyOptions(), report)
    for item in [*plan.children, *plan.parents]:
        body = item.body
        if not body["metadata"].get("namespace") and cluster.resource(item.key[0], item.key[1]).namespaced:
            body = {**body, "metadata": {**body["metadata"], "namespace": "default"}}
        session.delete(body, "deleted")
    session.sync_egress_config()
