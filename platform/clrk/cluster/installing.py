"""``clrk install``: put the platform onto a cluster that already runs Knative Serving.

Idempotent: the static objects are server-side applied (field manager ``clrk``); the CA and the
platform key are created once and kept on later runs (rotating them would cut every running
agent off from the gateway); the gateway's merged configuration (ConfigMap ``clrk-egress-config``,
which its pod mounts) is written from whatever the cluster already holds, empty on a fresh cluster;
the images and cluster domain it was given (or the defaults: a setting not given is not kept
from an earlier install, so that upgrading clrk upgrades its images) are recorded in ConfigMap
``clrk-platform``, which ``clrk apply`` and the operator compile agents with; Knative's
``config-features`` gets the four flags the agent pods need, and its ``config-defaults`` a
``max-revision-timeout-seconds`` of 3610 (an agent whose ``spec.timeout`` is over Knative's 600 s
default deploys, its async invocations may run an hour, and Knative's timeouts wait 10 s past the
shim's: :data:`~clrk.manifests.compiling.KNATIVE_MAX_TIMEOUT_S`).

Async invocations: Redis's password (Secret ``clrk-redis``) is made once, like the platform key,
and its ``password`` copied into the ingress's namespace on every install. The Broker and Trigger
need Knative Eventing: on a cluster without it they are left out with a note (async invocations
then answer 503 until Eventing is installed and ``clrk install`` runs again).

Upgrading from a clrk that kept one proxy-token key for every namespace (Secret
``clrk-egress-token``, copied into each agent namespace) and gave the gateway a ClusterRole on
every Secret and ConfigMap: the platform key is a new Secret, ``clrk-platform-key``, generated
fresh (the old key was readable in every agent namespace, so it is not carried over), and the
old Secret, ClusterRole and ClusterRoleBinding are deleted (:data:`RETIRED`). The key lives in
the platform's namespaces only: clrk-system (the gateway mounts it) and a copy in clrk (the
ingress's: a pod mounts only its own namespace's Secrets), rewritten from clrk-system on every
install. Agent pods of the
old version sign with the old key and are refused by the new gateway until ``clrk apply`` (or
the operator, which re-reconciles every TaskAgent when it starts) gives their namespace its keys
and re-rolls them; it also deletes the namespace's old copy.

The ingress's ClusterRole no longer reads Secrets (Callers' Secrets are granted per namespace by
:mod:`~clrk.cluster.grants`): applying it rewrites its rules whole, which takes an earlier
version's rule on every Secret away.
"""

from __future__ import annotations

import time
from typing import Any

from clrk.cluster.applying import Applier, ApplyOptions, Report
from clrk.cluster.configs import (
    REDIS_SECRET,
    ca_objects,
    install_objects,
    knative_defaults,
    knative_features,
    platform_key_secret,
    redis_password_copy,
    redis_secret,
)
from clrk.cluster.connecting import Cluster
from clrk.cluster.failures import missing_kind
from clrk.cluster.settings import PLATFORM_CONFIGMAP, platform_configmap, recorded_settings
from clrk.errors import ClusterError
from clrk.manifests.options import INGRESS_NAMESPACE, ClusterOptions, PlatformSettings
from clrk.manifests.policies import SYSTEM_NAMESPACE

__all__ = ["RETIRED", "ingress_key_copy", "install", "platform_options", "wait_established"]

_CRD = "CustomResourceDefinition"
RETIRED = (
    ("v1", "Secret", SYSTEM_NAMESPACE, "clrk-egress-token"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "", "clrk-egress"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", "", "clrk-egress"),
)
"""What earlier versions installed and this one must not leave behind: the proxy-token key that
was copied into every agent namespace, and the gateway's rights on every Secret and ConfigMap."""


def _require_knative(cluster: Cluster, report: Report) -> bool:
    """Raises without Knative Serving; whether Knative Eventing's Broker is served (noted when not)."""
    cluster.resource("serving.knative.dev/v1", "Service")  # raises, naming Knative Serving
    try:
        cluster.resource("sources.knative.dev/v1", "PingSource")
    except ClusterError:
        report(f"note: {missing_kind('sources.knative.dev/v1', 'PingSource', cluster.context)}")
    try:
        cluster.resource("eventing.knative.dev/v1", "Broker")
    except ClusterError:
        report(
            "note: no Knative Eventing Broker on this cluster: the Broker and Trigger of async "
            "invocations are left out (Prefer: respond-async answers 503) until it is installed "
            "and `clrk install` runs again"
        )
        return False
    return True


def _knative_configmap(applier: Applier, forced: Applier, body: dict[str, Any]) -> None:
    """Take our keys of one of Knative Serving's own ConfigMaps over (it must exist: a cluster
    without it has a broken Serving install, and creating it here would hide that)."""
    meta = body["metadata"]
    if applier.get(applier.cluster.resource("v1", "ConfigMap"), meta["name"], meta["namespace"]) is None:
        raise ClusterError(
            f"Knative Serving looks incomplete: no ConfigMap {meta['namespace']}/{meta['name']}; "
            "reinstall it (https://knative.dev/docs/install/yaml-install/serving/install-serving-with-yaml/)"
        )
    forced.apply(body, "platform/config/knative-features.yaml")


def wait_established(cluster: Cluster, names: list[str], timeout: float = 60.0) -> None:
    """Until the API server serves our CRDs, applying a TaskAgent would fail: wait for them."""
    crds = cluster.resource("apiextensions.k8s.io/v1", _CRD)
    deadline = time.monotonic() + timeout
    pending = list(names)
    while pending:
        body = cluster.read(crds, pending[0], None) or {}
        conditions = (body.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
            pending.pop(0)
        elif time.monotonic() > deadline:
            raise ClusterError(f"CRD {pending[0]} not established after {timeout:g}s: see `kubectl describe crd`")
        else:
            time.sleep(0.2)


def platform_options(cluster: Cluster, settings: PlatformSettings) -> ClusterOptions:
    """``settings`` over what the last ``clrk install`` recorded on ``cluster`` over the defaults."""
    recorded = cluster.read(cluster.resource("v1", "ConfigMap"), PLATFORM_CONFIGMAP, SYSTEM_NAMESPACE)
    return settings.options(recorded_settings(recorded))


def ingress_key_copy(original: dict[str, Any], options: ClusterOptions) -> dict[str, Any]:
    """The platform key's copy in the ingress's namespace (a pod mounts only its own namespace's
    Secrets): the same ``data`` as ``original``, the Secret in clrk-system."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": options.platform_key_secret,
            "namespace": INGRESS_NAMESPACE,
            "labels": {"app.kubernetes.io/part-of": "clrk", "app.kubernetes.io/managed-by": "clrk"},
        },
        "type": "Opaque",
        "data": dict(original.get("data") or {}),
    }


def install(cluster: Cluster, report: Report, settings: PlatformSettings | None = None) -> ClusterOptions:
    """Apply the platform, the generated keys when absent, the gateway's configuration, the
    platform's settings and Knative's feature flags; returns the options installed."""
    eventing = _require_knative(cluster, report)
    options = (settings or PlatformSettings()).options()
    applier = Applier(cluster, ApplyOptions(platform=options), report)
    objects = install_objects(options)
    if not eventing:
        objects = [body for body in objects if not body["apiVersion"].startswith("eventing.knative.dev/")]
    for body in objects:
        applier.apply(body, "platform/config")
    wait_established(cluster, [b["metadata"]["name"] for b in objects if b["kind"] == _CRD])
    applier.apply(platform_configmap(options), "the platform settings")
    applier.sync_egress_config()  # the gateway mounts it: it must exist before the first apply
    secrets = applier.get(cluster.resource("v1", "Secret"), "clrk-ca-key", SYSTEM_NAMESPACE)
    if secrets is None:
        for body in ca_objects():
            applier.apply(body, "the generated CA")
    secret = cluster.resource("v1", "Secret")
    if applier.get(secret, options.platform_key_secret, SYSTEM_NAMESPACE) is None:
        applier.apply(platform_key_secret(options), "the generated platform key")
    key = applier.get(secret, options.platform_key_secret, SYSTEM_NAMESPACE) or {}
    applier.apply(ingress_key_copy(key, options), "the platform key, for the ingress")
    if applier.get(secret, REDIS_SECRET, SYSTEM_NAMESPACE) is None:
        applier.apply(redis_secret(), "the generated Redis password")
    password = applier.get(secret, REDIS_SECRET, SYSTEM_NAMESPACE) or {}
    applier.apply(redis_password_copy(password, INGRESS_NAMESPACE), "the Redis password, for the ingress")
    for api_version, kind, namespace, name in RETIRED:
        body = {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": namespace}}
        applier.delete(body, "deleted (retired)")
    forced = Applier(cluster, ApplyOptions(force_conflicts=True), report)
    _knative_configmap(applier, forced, knative_features())
    _knative_configmap(applier, forced, knative_defaults())
    return options
