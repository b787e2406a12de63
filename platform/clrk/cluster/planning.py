"""What ``clrk apply`` sends, in which order, labelled how. Pure: no cluster, no files.

Two waves. First the clrk objects as written (TaskAgent, CredentialInjectionPolicy, TaskSchedule,
Caller), whose uids the cluster then assigns; then what they compile to, each tied to its clrk
object: an ``ownerReference`` when both share a namespace (so the garbage collector cascades a
delete), else the label ``clrk.dev/owner: <Kind>.<namespace>.<name>`` (owner references cannot cross
namespaces: the ``clrk-<agent>`` Services in ``clrk``, the egress ConfigMaps in ``clrk-system``),
which ``clrk delete`` and prune follow.

Every object carries ``app.kubernetes.io/managed-by: clrk`` and ``clrk.dev/apply-set: <id>``.
Prune deletes what carries this set's label and is no longer in the manifests. The id is
``--apply-set`` when given, else derived from the manifest paths as written (so run ``clrk apply``
from the same folder, or pass ``--apply-set`` in CI).
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from clrk.api import API_VERSION, KINDS
from clrk.errors import SpecError
from clrk.manifests import Bundle, ClusterOptions, compile_bundle
from clrk.manifests.loading import RawDocument

__all__ = [
    "LABEL_APPLY_SET",
    "LABEL_MANAGED",
    "LABEL_OWNER",
    "Item",
    "Key",
    "Owner",
    "Plan",
    "apply_set_id",
    "key_of",
    "owner_label",
    "passthrough_sources",
    "plan_apply",
    "stale",
    "tie_to_owner",
]

LABEL_MANAGED = "app.kubernetes.io/managed-by"
LABEL_APPLY_SET = "clrk.dev/apply-set"
LABEL_OWNER = "clrk.dev/owner"
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$")

Key = tuple[str, str, str, str]
"""``(apiVersion, kind, namespace, name)``; namespace is ``""`` for cluster-scoped objects."""
Owner = tuple[str, str, str]
"""``(kind, namespace, name)`` of a clrk object."""


@dataclass
class Item:
    body: dict[str, Any]
    source: str
    """The manifest file the object came from (for a compiled object, its owner's)."""
    owner: Owner | None = None

    @property
    def key(self) -> Key:
        return key_of(self.body)

    @property
    def what(self) -> str:
        kind, ns, name = self.key[1], self.key[2], self.key[3]
        return f"{kind} {ns}/{name}" if ns else f"{kind} {name}"


@dataclass
class Plan:
    apply_set: str
    parents: list[Item] = field(default_factory=list)
    children: list[Item] = field(default_factory=list)

    @property
    def items(self) -> list[Item]:
        return self.parents + self.children

    @property
    def agent_services(self) -> list[tuple[str, str]]:
        """``(namespace, name)`` of each Knative Service the plan applies."""
        return [(i.key[2], i.key[3]) for i in self.children if i.key[:2] == ("serving.knative.dev/v1", "Service")]


def key_of(body: dict[str, Any]) -> Key:
    meta = body.get("metadata", {})
    return (str(body["apiVersion"]), str(body["kind"]), str(meta.get("namespace", "")), str(meta.get("name", "")))


def apply_set_id(paths: Iterable[str], explicit: str | None = None) -> str:
    """A label value naming this set of manifests: ``explicit``, or a hash of the paths given."""
    if explicit is not None:
        if not _LABEL_VALUE.match(explicit):
            raise SpecError("--apply-set", "", f"expected a label value (≤63 of [A-Za-z0-9_.-]), found {explicit!r}")
        return explicit
    normal = sorted(os.path.normpath(p) for p in paths)
    return "p-" + hashlib.sha256("\0".join(normal).encode()).hexdigest()[:16]


def owner_label(owner: Owner) -> str:
    value = ".".join(owner)
    if len(value) <= 63:
        return value
    return f"{owner[0]}.{hashlib.sha256(value.encode()).hexdigest()[:40]}"[:63]


def _owner(body: dict[str, Any]) -> Owner | None:
    """Which clrk object a compiled object belongs to, read from the labels the compiler sets."""
    meta = body.get("metadata", {})
    labels, namespace = meta.get("labels", {}) or {}, meta.get("namespace", "")
    if "clrk.dev/schedule" in labels:
        return ("TaskSchedule", namespace, labels["clrk.dev/schedule"])
    if "clrk.dev/policy" in labels:
        return ("CredentialInjectionPolicy", labels.get("clrk.dev/namespace", namespace), labels["clrk.dev/policy"])
    ref = (meta.get("annotations") or {}).get("clrk.dev/agent-ref")
    if ref:
        ns, _, name = ref.partition("/")
        return ("TaskAgent", ns, name)
    if "clrk.dev/agent" in labels:
        return ("TaskAgent", labels.get("clrk.dev/namespace", namespace), labels["clrk.dev/agent"])
    return None


def _labelled(body: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    out = copy.deepcopy(body)
    meta = out.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    return out


def plan_apply(
    bundle: Bundle,
    apply_set: str,
    options: ClusterOptions | None = None,
    passthrough_sources: dict[Key, str] | None = None,
) -> Plan:
    """The clrk objects (with their defaulted namespace) and the compiled objects, all labelled."""
    manifests, labels = bundle.manifests, {LABEL_MANAGED: "clrk", LABEL_APPLY_SET: apply_set}
    plan = Plan(apply_set)
    sources: dict[Owner, str] = {}
    for resources in (manifests.agents, manifests.policies, manifests.schedules, manifests.callers):
        for resource in resources:
            doc = manifests.source_of(resource)
            body = _labelled(doc.body, labels)
            body["metadata"]["namespace"] = resource.metadata.namespace
            sources[(resource.kind, resource.metadata.namespace, resource.metadata.name)] = doc.source
            plan.parents.append(Item(body, doc.source))
    for body in compile_bundle(bundle, options):
        if body.get("apiVersion") == API_VERSION and body.get("kind") in KINDS:
            continue
        owner = _owner(body)
        extra = {LABEL_OWNER: owner_label(owner)} if owner else {}
        item = Item(_labelled(body, {**labels, **extra}), "", owner)
        item.source = sources.get(owner, "") if owner else (passthrough_sources or {}).get(item.key, "")
        plan.children.append(item)
    return plan


def tie_to_owner(item: Item, uids: dict[Owner, str]) -> dict[str, Any]:
    """``item``'s body with an ownerReference to its clrk object, when they share a namespace."""
    owner = item.owner
    if owner is None or owner[1] != item.key[2] or owner not in uids:
        return item.body
    body = copy.deepcopy(item.body)
    body["metadata"]["ownerReferences"] = [
        {
            "apiVersion": API_VERSION,
            "kind": owner[0],
            "name": owner[2],
            "uid": uids[owner],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    return body


def passthrough_sources(documents: Iterable[RawDocument]) -> dict[Key, str]:
    """Where each document of another kind came from, for error messages."""
    out = {}
    for doc in documents:
        if "name" in (doc.body.get("metadata") or {}):
            out[key_of(doc.body)] = doc.source
    return out


def stale(live: Iterable[dict[str, Any]], desired: Iterable[Key]) -> list[dict[str, Any]]:
    """The live objects of the set that the manifests no longer hold, children before parents."""
    wanted = set(desired)
    gone = [body for body in live if key_of(body) not in wanted]
    return sorted(gone, key=lambda body: body.get("apiVersion") == API_VERSION)
