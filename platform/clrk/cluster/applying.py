"""``clrk apply`` and ``clrk delete``: send a :class:`~clrk.cluster.planning.Plan` to a cluster.

Server-side apply (field manager ``clrk``), clrk objects first so that what they compile to can
carry owner references to their uids. Each namespace holding TaskAgents gets its shared objects
first (:meth:`Applier.prepare_namespaces`): its Pod Security label, NetworkPolicies, the CA and
its own keys, derived from the platform key, which itself never leaves the platform's
namespaces; each PingSource's sink gets its agent's schedule token, made from the same key
(:mod:`clrk.manifests.schedules`). A policy naming a provider key not granted to its namespace
is refused before anything is applied, and left out whenever the gateway's configuration is
merged; each namespace holding Callers gets the Role letting the ingress read exactly the
Secrets they name (:mod:`~clrk.cluster.grants`). Each change is reported through ``report`` as
one line (``taskagent default/jq-bot configured``). Every refusal becomes a ClusterError naming
the object and the manifest it came from.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from kubernetes.client.exceptions import ApiException

from clrk.cluster.configs import agent_namespace_objects, gateway_secrets, pod_security_labels
from clrk.cluster.connecting import Cluster
from clrk.cluster.grants import (
    CALLER_SECRETS_ROLE,
    caller_access_objects,
    caller_secret_names,
    grant_problem,
    granted_configmaps,
    injected_secrets,
)
from clrk.cluster.merging import merged_egress_config, selector
from clrk.cluster.planning import LABEL_APPLY_SET, LABEL_MANAGED, Key, Owner, Plan, key_of, stale, tie_to_owner
from clrk.errors import ClusterError
from clrk.manifests.options import ClusterOptions
from clrk.manifests.policies import SYSTEM_NAMESPACE
from clrk.manifests.schedules import with_schedule_token
from clrk.manifests.tenancy import agent_keys_secret, callback_secret

__all__ = ["FIELD_MANAGER", "Applier", "ApplyOptions", "apply_plan", "delete_plan", "unchanged"]

FIELD_MANAGER = "clrk"
GATEWAY_SECRETS_MANAGER = "clrk-egress-secrets"
"""Owns the gateway Deployment's projected Secret sources (``clrk install`` leaves them out)."""
SHARED = (("v1", "ConfigMap", "clrk-ca"),)
"""What every agent's pod mounts from its own namespace, copied there from clrk-system."""
RETIRED_COPY = "clrk-egress-token"
"""The copy of the platform's token key that earlier versions put into every agent namespace:
removed from there (when it carries the copier's label) as each namespace is prepared."""
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
    platform: ClusterOptions = field(default_factory=ClusterOptions)
    """The platform as installed: what the namespaces' shared objects are made for."""


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

    def apply(
        self, body: dict[str, Any], source: str, *, manager: str = FIELD_MANAGER, force: bool = False
    ) -> dict[str, Any]:
        api_version, kind, namespace, name = key_of(body)
        resource = self.cluster.resource(api_version, kind)
        if resource.namespaced and not namespace:
            body = {**body, "metadata": {**body["metadata"], "namespace": self.options.namespace}}
            namespace = self.options.namespace
        what = f"{kind} {namespace}/{name}" if resource.namespaced else f"{kind} {name}"
        before = self.get(resource, name, namespace if resource.namespaced else None)
        forced = force or self.options.force_conflicts or None
        with self.cluster.calling(what, source):
            if before is None:
                after = resource.server_side_apply(
                    body=body, field_manager=manager, force_conflicts=forced, **self._kwargs()
                )
            else:
                # A dry run first: some servers (1.20) store a no-op apply anyway, bumping the
                # resourceVersion (a new managedFields time) and re-rolling nothing but watchers.
                after = resource.server_side_apply(
                    body=body, field_manager=manager, force_conflicts=forced, dry_run="All"
                )
                if not unchanged(before, after.to_dict()) and self.options.dry_run == "none":
                    after = resource.server_side_apply(body=body, field_manager=manager, force_conflicts=forced)
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

    def platform_key(self) -> bytes:
        """The platform key, read from its Secret in clrk-system (never copied anywhere)."""
        name = self.options.platform.platform_key_secret
        body = self.get(self.cluster.resource("v1", "Secret"), name, SYSTEM_NAMESPACE)
        encoded = str(((body or {}).get("data") or {}).get("key") or "")
        if not encoded:
            raise ClusterError(
                f"Secret {SYSTEM_NAMESPACE}/{name} (key 'key') is missing: the platform is not installed "
                "on this cluster, or installed by an earlier clrk; run `clrk install`"
            )
        return base64.b64decode(encoded).strip()

    def remove_retired_copy(self, namespace: str) -> None:
        """Delete the platform key's copy an earlier clrk left in ``namespace`` (only that copy:
        a Secret of that name without the copier's label is someone else's)."""
        secret = self.get(self.cluster.resource("v1", "Secret"), RETIRED_COPY, namespace)
        labels = ((secret or {}).get("metadata") or {}).get("labels") or {}
        if labels.get("clrk.dev/copied-from") == SYSTEM_NAMESPACE:
            self.delete(
                {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": RETIRED_COPY, "namespace": namespace}},
                "deleted (retired)",
            )

    def prepare_namespaces(self, namespaces: set[str]) -> None:
        """In each agent namespace: its Pod Security label, the NetworkPolicies that fence agent
        pods (what they send, who may connect), its keys Secret (derived from the platform key for
        this namespace alone) and the CA ConfigMap (copied from clrk-system)."""
        dns = self.dns_addresses()
        platform = self.options.platform
        key = self.platform_key()
        for namespace in sorted(namespaces):
            self.label_namespace(namespace)
            for body in agent_namespace_objects(namespace, dns, platform):
                self.apply(body, "platform/config/agent-namespace.yaml")
            if namespace != SYSTEM_NAMESPACE:
                self.apply(agent_keys_secret(namespace, key, platform), f"the keys of namespace {namespace}")
                self.apply(callback_secret(namespace, key, platform), f"the callback secret of namespace {namespace}")
                self.remove_retired_copy(namespace)
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

    def system_secrets(self, names: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        """The Secrets ``names`` of clrk-system as the cluster holds them (None: missing); only
        their annotations are looked at (:mod:`~clrk.cluster.grants`)."""
        resource = self.cluster.resource("v1", "Secret")
        return {name: self.get(resource, name, SYSTEM_NAMESPACE) for name in sorted(set(names))}

    def check_grants(self, plan: Plan) -> None:
        """Refuse, before anything is applied, a policy of ``plan`` whose Secret is not granted to
        its namespace (:mod:`~clrk.cluster.grants`): a ClusterError naming the policy, its
        manifest, the field, the Secret and the annotation that grants it."""
        policies = [item for item in plan.parents if item.key[1] == "CredentialInjectionPolicy"]
        wanted = {str(item.body["spec"]["secretKeyRef"]["name"]): item for item in policies}
        secrets = self.system_secrets(wanted)
        for item in policies:
            name = str(item.body["spec"]["secretKeyRef"]["name"])
            namespace = item.key[2] or self.options.namespace
            problem = grant_problem(name, secrets[name], namespace)
            if problem is not None:
                raise ClusterError(
                    f"{item.source}: CredentialInjectionPolicy {namespace}/{item.key[3]}: "
                    f"spec.secretKeyRef.name: {problem}"
                )

    def sync_caller_access(self, namespaces: Iterable[str]) -> None:
        """In each of ``namespaces``, the Role and RoleBinding letting the ingress ``get`` exactly
        the Secrets the namespace's Callers name, as the cluster now holds them (those being
        deleted left out); both deleted when none names one."""
        touched = sorted(set(namespaces))
        if not touched:
            return
        callers = self.cluster.resource("clrk.dev/v1alpha1", "Caller")
        for namespace in touched:
            with self.cluster.calling(f"Callers of {namespace} (listing)"):
                listed = callers.get(namespace=namespace).to_dict().get("items", [])
            wanted = caller_access_objects(namespace, caller_secret_names(listed))
            for body in wanted:
                self.apply(body, f"the Secrets the Callers of {namespace} name")
            if not wanted:
                for kind in ("RoleBinding", "Role"):
                    meta = {"name": CALLER_SECRETS_ROLE, "namespace": namespace}
                    self.delete(
                        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta}, "deleted"
                    )

    def sync_egress_config(self) -> None:
        """Rewrite the gateway's one config file from every per-object egress ConfigMap, leaving
        out (with a note) each injection whose Secret is not granted to its policy's namespace."""
        configmaps = self.cluster.resource("v1", "ConfigMap")
        with self.cluster.calling("egress ConfigMaps (listing)"):
            found = configmaps.get(namespace=SYSTEM_NAMESPACE, label_selector=selector()).to_dict()
        items = found.get("items", [])
        allowed, refused = granted_configmaps(items, self.system_secrets(injected_secrets(items)))
        for line in refused:
            self.report(f"note: left out of the gateway: {line}")
        merged = merged_egress_config(allowed)
        self.apply(merged, "the merged egress configuration")
        injections = json.loads(merged["data"]["config.json"]).get("injections") or []
        gateway = gateway_secrets(injections)
        meta = gateway["metadata"]
        if self.get(self.cluster.resource("apps/v1", "Deployment"), meta["name"], meta["namespace"]) is None:
            self.report(
                f"note: no Deployment {meta['namespace']}/{meta['name']}: the gateway is not installed (`clrk install`)"
            )
            return
        # Its own field manager, forced: `clrk install` owns the rest of the Deployment and
        # leaves these sources out, so neither undoes the other.
        self.apply(gateway, "the Secrets the gateway's injections name", manager=GATEWAY_SECRETS_MANAGER, force=True)

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
    session.check_grants(plan)
    applied: list[dict[str, Any]] = []
    uids: dict[Owner, str] = {}
    for item in plan.parents:
        live = session.apply(item.body, item.source)
        uids[(item.key[1], item.key[2], item.key[3])] = str(live["metadata"].get("uid", ""))
        applied.append(live)
    agent_namespaces = {item.key[2] for item in plan.parents if item.key[1] == "TaskAgent"}
    if agent_namespaces:
        session.prepare_namespaces(agent_namespaces)
    key = session.platform_key() if any(item.key[1] == "PingSource" for item in plan.children) else None
    for item in plan.children:
        body = tie_to_owner(item, uids)
        if key is not None:  # a PingSource's sink carries its agent's schedule token
            body = with_schedule_token(body, key, options.platform)
        applied.append(session.apply(body, item.source))
    kinds = {(item.key[0], item.key[1]) for item in plan.items}
    caller_namespaces = {item.key[2] or options.namespace for item in plan.parents if item.key[1] == "Caller"}
    if options.prune:
        scanned = kinds | set(_ALWAYS_SCANNED) | session.recorded_kinds(plan.apply_set)
        desired: set[Key] = {key_of(body) for body in applied}
        for body in stale(session.live(plan.apply_set, scanned), desired):
            session.delete(body, "pruned")
            if body["kind"] == "Caller":
                caller_namespaces.add(str(body["metadata"]["namespace"]))
    if options.dry_run == "none":
        session.sync_caller_access(caller_namespaces)
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
    session.sync_caller_access({item.key[2] or "default" for item in plan.parents if item.key[1] == "Caller"})
    session.sync_egress_config()
