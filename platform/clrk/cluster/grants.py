"""Who may use which Secret: provider keys granted to namespaces, Caller keys to the ingress. Pure.

**Provider keys.** A CredentialInjectionPolicy lives in its tenant's namespace but names a Secret
of clrk-system, which only the platform admin writes. So the admin, not the policy, says which
namespaces' policies may use a provider key: annotation ``clrk.dev/namespaces`` on the Secret,
a comma-separated list of namespaces (``team-a,team-b``) or ``*`` for every one. An injection whose
Secret is missing, unannotated, or granted to other namespaces is refused by ``clrk apply`` and
left out of the gateway's merged configuration (so its Secret is not projected into the gateway's
``secrets`` volume either) by whoever writes it, ``clrk apply`` or the operator: a tenant cannot
have the gateway spend another team's key. The platform's own Secrets are never granted.

**Caller keys.** The ingress reads the Secret a Caller's ``keySecretRef`` names through the API
server. It may read exactly those: in each namespace holding such Callers, Role
``clrk-ingress-callers`` grants ``get`` on them by name (``resourceNames``), bound to the ingress's
service account, and rewritten from the namespace's Callers whenever ``clrk apply``, prune,
delete or the operator changes one. A namespace whose Callers name no Secret has neither object:
a rule with an empty ``resourceNames`` would mean every Secret.

The admin could instead copy each provider key into the tenant's namespace (the usual pattern for
Secrets a workload mounts), but the gateway mounts Secrets of clrk-system only, and a copy in a
tenant's namespace is one more place the key can be read: the key stays where it is, and only who
may use it is written beside it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from clrk.api import Caller
from clrk.cluster.configs import RESERVED_SECRETS
from clrk.manifests.options import INGRESS_NAMESPACE
from clrk.manifests.policies import SYSTEM_NAMESPACE

__all__ = [
    "CALLER_SECRETS_ROLE",
    "GRANT_ANNOTATION",
    "INGRESS_ACCOUNT",
    "caller_access_objects",
    "caller_secret_names",
    "grant_problem",
    "granted",
    "granted_configmaps",
    "injected_secrets",
    "rendered_caller_access",
]

GRANT_ANNOTATION = "clrk.dev/namespaces"
"""On a provider-key Secret in clrk-system: the namespaces whose policies may inject it."""
CALLER_SECRETS_ROLE = "clrk-ingress-callers"
"""The Role (and RoleBinding) in a Callers' namespace that lets the ingress read their Secrets."""
INGRESS_ACCOUNT = "clrk-ingress"
_LABELS = {"app.kubernetes.io/part-of": "clrk", "app.kubernetes.io/managed-by": "clrk"}
_POLICY_LABEL = "clrk.dev/policy"
_NAMESPACE_LABEL = "clrk.dev/namespace"


def _granted_to(secret: Mapping[str, Any]) -> set[str]:
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    return {part.strip() for part in str(annotations.get(GRANT_ANNOTATION, "")).split(",") if part.strip()}


def granted(name: str, secret: Mapping[str, Any] | None, namespace: str) -> bool:
    """Whether Secret ``name`` of clrk-system (``secret``, as read; None when missing) may be
    injected for the agents of ``namespace``."""
    if secret is None or name in RESERVED_SECRETS:
        return False
    names = _granted_to(secret)
    return "*" in names or namespace in names


def grant_problem(name: str, secret: Mapping[str, Any] | None, namespace: str) -> str | None:
    """Why Secret ``name`` may not be injected for ``namespace``, with what the admin should
    run; None when it may."""
    if granted(name, secret, namespace):
        return None
    where = f"Secret {SYSTEM_NAMESPACE}/{name}"
    if name in RESERVED_SECRETS:
        return f"{where} is one of the platform's own keys, never injected"
    if secret is None:
        return (
            f"{where} does not exist; the platform admin creates it there and grants it to namespace "
            f"{namespace} (`kubectl -n {SYSTEM_NAMESPACE} annotate secret {name} {GRANT_ANNOTATION}={namespace}`)"
        )
    others = sorted(_granted_to(secret))
    value = ",".join([*others, namespace])
    return (
        f"{where} is not granted to namespace {namespace} "
        f"({GRANT_ANNOTATION}: {','.join(others) or 'not set'}); the platform admin grants it with "
        f"`kubectl -n {SYSTEM_NAMESPACE} annotate --overwrite secret {name} {GRANT_ANNOTATION}={value}`"
        " (a comma-separated list of namespaces, or '*' for every namespace)"
    )


def _injections(configmap: Mapping[str, Any]) -> list[dict[str, Any]]:
    config = json.loads((configmap.get("data") or {}).get("config.json") or "{}")
    return list(config.get("injections") or [])


def injected_secrets(configmaps: Iterable[Mapping[str, Any]]) -> set[str]:
    """The names of the Secrets the injections of the egress ConfigMaps ``configmaps`` name."""
    return {str((i.get("secret") or {}).get("name", "")) for c in configmaps for i in _injections(c)} - {""}


def granted_configmaps(
    configmaps: Iterable[dict[str, Any]], secrets: Mapping[str, Mapping[str, Any] | None]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The egress ConfigMaps with every injection left out whose Secret (in ``secrets``, by name:
    as read from clrk-system, None when missing) is not granted to the namespace of the policy it
    came from (its ConfigMap's ``clrk.dev/namespace`` label); and one line per injection left
    out, saying why."""
    kept: list[dict[str, Any]] = []
    refused: list[str] = []
    for body in configmaps:
        injections = _injections(body)
        if not injections:
            kept.append(body)
            continue
        labels = (body.get("metadata") or {}).get("labels") or {}
        namespace = str(labels.get(_NAMESPACE_LABEL, ""))
        allowed = []
        for injection in injections:
            name = str((injection.get("secret") or {}).get("name", ""))
            problem = grant_problem(name, secrets.get(name), namespace)
            strangers = [str(a) for a in injection.get("agents") or [] if not str(a).startswith(f"{namespace}/")]
            if problem is None and strangers:  # the compiler never writes these: a grant is per namespace
                problem = f"names agents outside namespace {namespace!r}: {', '.join(strangers)}"
            if problem is None:
                allowed.append(injection)
            else:
                what = f"CredentialInjectionPolicy {namespace}/{labels.get(_POLICY_LABEL, '?')}"
                refused.append(f"{what}: spec.secretKeyRef.name: {problem}")
        config = json.loads(body["data"]["config.json"])
        config["injections"] = allowed
        kept.append({**body, "data": {**body["data"], "config.json": json.dumps(config, sort_keys=True)}})
    return kept, refused


def _spec_only(body: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key != "status"}


def caller_secret_names(callers: Iterable[Caller | Mapping[str, Any]]) -> list[str]:
    """The Secrets the ``keySecretRef`` of ``callers`` (models, or bodies as read, those being
    deleted and those that do not validate left out) name, sorted."""
    names: set[str] = set()
    for item in callers:
        if not isinstance(item, Caller):
            if (item.get("metadata") or {}).get("deletionTimestamp"):
                continue
            try:
                item = Caller.model_validate(_spec_only(item))
            except ValidationError:
                continue
        if item.spec.key_secret_ref is not None:
            names.add(item.spec.key_secret_ref.name)
    return sorted(names)


def caller_access_objects(namespace: str, names: Iterable[str]) -> list[dict[str, Any]]:
    """The Role and RoleBinding letting the ingress ``get`` exactly the Secrets ``names`` of
    ``namespace``; none when there are none (an empty ``resourceNames`` would mean every one)."""
    names = sorted(set(names))
    if not names:
        return []
    meta = {"name": CALLER_SECRETS_ROLE, "namespace": namespace, "labels": dict(_LABELS)}
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": names, "verbs": ["get"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": dict(meta),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": CALLER_SECRETS_ROLE},
            "subjects": [{"kind": "ServiceAccount", "name": INGRESS_ACCOUNT, "namespace": INGRESS_NAMESPACE}],
        },
    ]


def rendered_caller_access(callers: Iterable[Caller]) -> list[dict[str, Any]]:
    """What ``clrk render`` shows of the ingress's access to Caller Secrets: the Role and
    RoleBinding of each namespace whose ``callers`` name Secrets (``clrk apply`` writes them from
    every Caller the namespace then holds, these and others)."""
    by_namespace: dict[str, list[Caller]] = {}
    for caller in callers:
        by_namespace.setdefault(caller.metadata.namespace, []).append(caller)
    out: list[dict[str, Any]] = []
    for namespace, mine in sorted(by_namespace.items()):
        out += caller_access_objects(namespace, caller_secret_names(mine))
    return out
