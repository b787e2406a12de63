"""The operator: what ``clrk apply`` does, for TaskAgents, TaskSchedules and
CredentialInjectionPolicies that another tool (``kubectl apply``, Argo CD, Flux) put on the cluster.

For a TaskAgent it compiles the object (:mod:`~clrk.cluster.reconciling`, the CLI's compiler),
server-side applies the result with the same field manager as ``clrk apply`` (``clrk``, so the two
never conflict), refreshes its namespace's egress ConfigMaps, and writes back ``status``:
``observedGeneration``, ``url`` and a ``Ready`` condition that mirrors the Knative Service's, or
says why nothing could be compiled. A TaskSchedule becomes its PingSource (owned by it, so the
garbage collector removes it with the schedule), whose sink is the ingress's schedule route with
the agent's token (made from the platform key, as ``clrk apply`` makes it), with a ``Ready``
condition mirroring the PingSource's. A policy's change or removal refreshes the egress ConfigMaps of its namespace;
its status says whether its Secret is granted to its namespace (:mod:`~clrk.cluster.grants`: an
ungranted one is left out of the gateway), re-checked every 15 s. A Caller's change or removal
rewrites its namespace's Role letting the ingress read exactly the Secrets Callers name.
Objects in other namespaces than their owner's are removed by finalizers. Like ``clrk apply``,
it gives each agent's namespace its shared objects (NetworkPolicies, the CA, its own keys derived
from the platform key) and points the gateway's ``secrets`` volume at the Secrets the merged
injections name.

Agents are compiled for the platform as installed: the operator's flags and ``CLRK_*`` settings
(``clrk install`` sets ``CLRK_RUNTIME_IMAGE`` and ``CLRK_CLUSTER_DOMAIN`` on its Deployment), else
ConfigMap ``clrk-system/clrk-platform``, read at start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import kopf

from clrk.cluster import confinement, warm_starts
from clrk.cluster.applying import Applier, ApplyOptions
from clrk.cluster.connecting import Cluster, connect
from clrk.cluster.grants import grant_problem
from clrk.cluster.installing import platform_options
from clrk.cluster.listing import ready_condition
from clrk.cluster.planning import LABEL_OWNER, owner_label, tie_to_owner
from clrk.cluster.reconciling import condition, desired, desired_schedule, egress_items
from clrk.errors import ClrkError
from clrk.manifests import ClusterOptions
from clrk.manifests.options import PlatformSettings
from clrk.manifests.schedules import with_schedule_token

__all__ = ["registry", "run_operator"]

registry = kopf.OperatorRegistry()
_RESOURCE = ("clrk.dev", "v1alpha1", "taskagents")
_POLICIES = ("clrk.dev", "v1alpha1", "credentialinjectionpolicies")
_CALLERS = ("clrk.dev", "v1alpha1", "callers")
_SCHEDULES = ("clrk.dev", "v1alpha1", "taskschedules")
_KSVC = ("serving.knative.dev/v1", "Service")
_PING = ("sources.knative.dev/v1", "PingSource")


def _cluster(memo: Any) -> Cluster:
    """One client per operator, for the kubeconfig and context in its memo (else the defaults)."""
    if getattr(memo, "cluster", None) is None:
        memo.cluster = connect(getattr(memo, "kubeconfig", None), getattr(memo, "context", None))
    cluster: Cluster = memo.cluster
    return cluster


@kopf.on.login(registry=registry)
def _login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """kopf talks to the same cluster, as the same user, as the kubernetes client."""
    config = _cluster(memo).api.configuration
    keys = config.api_key or {}
    scheme, _sep, token = str(keys.get("authorization") or keys.get("BearerToken") or "").partition(" ")
    return kopf.ConnectionInfo(
        server=str(config.host),
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
        username=config.username or None,
        password=config.password or None,
    )


def _options(memo: Any) -> ClusterOptions:
    """What agents are compiled with, settled once per operator (see the module's docstring)."""
    if getattr(memo, "options", None) is None:
        settings = getattr(memo, "settings", None) or PlatformSettings()
        memo.options = platform_options(_cluster(memo), settings)
    options: ClusterOptions = memo.options
    return options


def _status(cluster: Cluster, namespace: str, name: str, generation: int) -> dict[str, Any]:
    service = cluster.read(cluster.resource(*_KSVC), name, namespace)
    ready, reason = ready_condition(service)
    url = str(((service or {}).get("status") or {}).get("url", ""))
    why = "KnativeServiceReady" if ready == "True" else "KnativeServiceNotReady"
    return {"observedGeneration": generation, "url": url, "conditions": [condition(ready, why, reason)]}


def _schedule_status(cluster: Cluster, namespace: str, name: str, generation: int) -> dict[str, Any]:
    source = cluster.read(cluster.resource(*_PING), name, namespace)
    ready, reason = ready_condition(source)
    why = "PingSourceReady" if ready == "True" else "PingSourceNotReady"
    return {"observedGeneration": generation, "conditions": [condition(ready, why, reason)]}


@kopf.on.startup(registry=registry)
def _configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="operator.clrk.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="operator.clrk.dev")
    settings.posting.level = logging.WARNING


def _listed(cluster: Cluster, kind: str, namespace: str) -> list[dict[str, Any]]:
    resource = cluster.resource("clrk.dev/v1alpha1", kind)
    with cluster.calling(f"{kind}s (listing)"):
        return [dict(item) for item in resource.get(namespace=namespace).to_dict().get("items", [])]


def _refresh_egress(cluster: Cluster, applier: Applier, namespace: str, gone: tuple[str, str] = ("", "")) -> None:
    """Re-apply the egress ConfigMaps of ``namespace``, leaving out ``gone`` (kind, name): being deleted."""
    agents, policies = (
        [o for o in _listed(cluster, kind, namespace) if (kind, o["metadata"]["name"]) != gone]
        for kind in ("TaskAgent", "CredentialInjectionPolicy")
    )
    for item in egress_items(agents, policies):
        applier.apply(item.body, f"egress configuration of {namespace}")
    applier.sync_egress_config()


def _delete_owned(cluster: Cluster, applier: Applier, owner: tuple[str, str, str]) -> None:
    label = owner_label(owner)
    for api_version, kind in (("v1", "Service"), ("v1", "ConfigMap")):
        resource = cluster.resource(api_version, kind)
        with cluster.calling(f"{kind} (listing)"):
            items = resource.get(label_selector=f"{LABEL_OWNER}={label}").to_dict().get("items", [])
        for item in items:
            applier.delete({"apiVersion": api_version, "kind": kind, "metadata": item["metadata"]}, "deleted")


def _compiled[P](compile_: Callable[[], P], patch: kopf.Patch, generation: int, logger: kopf.Logger) -> P | None:
    """What ``compile_`` makes of the object; None when it is invalid, which its status then says."""
    try:
        return compile_()
    except ClrkError as exc:
        patch.status["observedGeneration"] = generation
        patch.status["conditions"] = [condition("False", "InvalidSpec", str(exc))]
        logger.warning("cannot compile: %s", exc)
        return None


@kopf.on.resume(*_RESOURCE, registry=registry)
@kopf.on.create(*_RESOURCE, registry=registry)
@kopf.on.update(*_RESOURCE, registry=registry)
def reconcile(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, patch: kopf.Patch, **_: Any) -> None:
    """Compile and apply one TaskAgent; record the outcome on its status."""
    cluster = _cluster(memo)
    namespace, name = str(body.metadata.namespace), str(body.metadata.name)
    generation = int(body.metadata.get("generation", 0))
    plan = _compiled(
        lambda: desired(dict(body), _listed(cluster, "CredentialInjectionPolicy", namespace), _options(memo)),
        patch,
        generation,
        logger,
    )
    if plan is None:
        return
    applier = Applier(cluster, ApplyOptions(platform=_options(memo)), logger.info)
    applier.prepare_namespaces({namespace})
    uids = {("TaskAgent", namespace, name): str(body.metadata.uid)}
    for item in plan.children:
        applier.apply(tie_to_owner(item, uids), f"TaskAgent {namespace}/{name}")
    _refresh_egress(cluster, applier, namespace)
    fresh = _status(cluster, namespace, name, generation)
    stored = dict(body.get("status") or {}).get("conditions") or []
    fresh["conditions"] += confinement.kept(stored)
    if _warm_start(body):
        fresh["conditions"] += warm_starts.kept(stored)
    patch.status.update(fresh)


def _warm_start(body: kopf.Body) -> bool:
    return bool(dict(body.get("spec") or {}).get("warmStart"))


def _warm_start_memory(memo: Any, namespace: str, name: str) -> dict[str, warm_starts.WarmStartReport | None]:
    """The last warm-start state of each pod of TaskAgent ``namespace/name``, by pod uid."""
    if getattr(memo, "warm_starts", None) is None:
        memo.warm_starts = {}
    memory: dict[str, warm_starts.WarmStartReport | None] = memo.warm_starts.setdefault((namespace, name), {})
    return memory


@kopf.on.resume(*_SCHEDULES, registry=registry)
@kopf.on.create(*_SCHEDULES, registry=registry)
@kopf.on.update(*_SCHEDULES, registry=registry)
def reconcile_schedule(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, patch: kopf.Patch, **_: Any) -> None:
    """Compile and apply one TaskSchedule (its PingSource); record the outcome on its status."""
    cluster = _cluster(memo)
    namespace, name = str(body.metadata.namespace), str(body.metadata.name)
    generation = int(body.metadata.get("generation", 0))
    options = _options(memo)
    plan = _compiled(lambda: desired_schedule(dict(body), options), patch, generation, logger)
    if plan is None:
        return
    applier = Applier(cluster, ApplyOptions(platform=options), logger.info)
    key = applier.platform_key()  # the sink's schedule token is made from it
    uids = {("TaskSchedule", namespace, name): str(body.metadata.uid)}
    for item in plan.children:
        child = with_schedule_token(tie_to_owner(item, uids), key, options)
        applier.apply(child, f"TaskSchedule {namespace}/{name}")
    patch.status.update(_schedule_status(cluster, namespace, name, generation))


@kopf.timer(*_SCHEDULES, interval=15.0, idle=5.0, registry=registry)
def refresh_schedule(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, **_: Any) -> None:
    """Follow the PingSource's readiness after the last change."""
    status = dict(body.get("status") or {})
    if any(c.get("reason") == "InvalidSpec" for c in status.get("conditions", [])):
        return
    meta = body.metadata
    fresh = _schedule_status(_cluster(memo), str(meta.namespace), str(meta.name), int(meta.get("generation", 0)))
    if [c["status"] for c in fresh["conditions"]] != [c.get("status") for c in status.get("conditions", [])]:
        patch.status.update(fresh)


def _policy_status(applier: Applier, body: kopf.Body) -> tuple[dict[str, Any], str | None]:
    """The policy's status: ``Ready`` when its Secret is granted to its namespace
    (:mod:`~clrk.cluster.grants`), else ``False``/``SecretNotGranted``; and the problem, if any."""
    namespace = str(body.metadata.namespace)
    name = str(((body.get("spec") or {}).get("secretKeyRef") or {}).get("name") or "")
    problem = grant_problem(name, applier.system_secrets([name])[name], namespace) if name else None
    if problem is None:
        ready = condition("True", "SecretGranted", f"Secret {name} is granted to namespace {namespace}")
    else:
        problem = f"spec.secretKeyRef.name: {problem}"
        ready = condition("False", "SecretNotGranted", problem)
    generation = int(body.metadata.get("generation", 0))
    return {"observedGeneration": generation, "conditions": [ready]}, problem


@kopf.on.resume(*_POLICIES, registry=registry)
@kopf.on.create(*_POLICIES, registry=registry)
@kopf.on.update(*_POLICIES, registry=registry)
def reconcile_policy(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, patch: kopf.Patch, **_: Any) -> None:
    """A policy changes what the gateway injects and which hosts its agents may reach. One whose
    Secret is not granted to its namespace is left out of the gateway (the merge leaves it out),
    which its status and an event say."""
    cluster = _cluster(memo)
    applier = Applier(cluster, ApplyOptions(), logger.info)
    status, problem = _policy_status(applier, body)
    if problem is not None:
        logger.warning("left out of the gateway: %s", problem)
    patch.status.update(status)
    _refresh_egress(cluster, applier, str(body.metadata.namespace))


@kopf.timer(*_POLICIES, interval=15.0, idle=5.0, registry=registry)
def refresh_policy(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, patch: kopf.Patch, **_: Any) -> None:
    """Follow the grant of the policy's Secret (the admin may create or annotate it later): when
    it changes, the gateway's configuration is rewritten with or without the injection."""
    cluster = _cluster(memo)
    applier = Applier(cluster, ApplyOptions(), logger.info)
    fresh, _problem = _policy_status(applier, body)
    stored = [c.get("status") for c in dict(body.get("status") or {}).get("conditions", [])]
    if [c["status"] for c in fresh["conditions"]] != stored:
        patch.status.update(fresh)
        _refresh_egress(cluster, applier, str(body.metadata.namespace))


@kopf.on.delete(*_POLICIES, registry=registry)
def cleanup_policy(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    cluster = _cluster(memo)
    namespace, name = str(body.metadata.namespace), str(body.metadata.name)
    applier = Applier(cluster, ApplyOptions(), logger.info)
    _delete_owned(cluster, applier, ("CredentialInjectionPolicy", namespace, name))
    _refresh_egress(cluster, applier, namespace, gone=("CredentialInjectionPolicy", name))


@kopf.on.resume(*_CALLERS, registry=registry)
@kopf.on.create(*_CALLERS, registry=registry)
@kopf.on.update(*_CALLERS, registry=registry)
@kopf.on.delete(*_CALLERS, registry=registry)
def reconcile_caller(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """The ingress may read exactly the Secrets its namespace's Callers name: rewrite that Role
    from them (one being deleted, this one included, is left out)."""
    cluster = _cluster(memo)
    Applier(cluster, ApplyOptions(), logger.info).sync_caller_access({str(body.metadata.namespace)})


@kopf.timer(*_RESOURCE, interval=15.0, idle=5.0, registry=registry)
def refresh(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, **_: Any) -> None:
    """Follow the Knative Service's readiness after the last change, what the pods say of
    their sandboxes (:mod:`~clrk.cluster.confinement`: read from their logs, once per pod) and,
    with ``spec.warmStart``, of their warm start (:mod:`~clrk.cluster.warm_starts`: the end of
    their logs, every tick)."""
    status = dict(body.get("status") or {})
    stored = status.get("conditions") or []
    if any(c.get("reason") == "InvalidSpec" for c in stored):
        return
    cluster = _cluster(memo)
    namespace, name = str(body.metadata.namespace), str(body.metadata.name)
    fresh = _status(cluster, namespace, name, int(body.metadata.get("generation", 0)))
    if getattr(memo, "sandbox_reports", None) is None:
        memo.sandbox_reports = {}
    fresh["conditions"].append(confinement.sandbox_condition(cluster, namespace, name, memo.sandbox_reports, stored))
    if _warm_start(body):
        memory = _warm_start_memory(memo, namespace, name)
        fresh["conditions"].append(warm_starts.warm_start_condition(cluster, namespace, name, memory, stored))
    elif getattr(memo, "warm_starts", None):
        memo.warm_starts.pop((namespace, name), None)
    changed = confinement.summary(fresh["conditions"]) != confinement.summary(stored)
    if changed or warm_starts.summary(fresh["conditions"]) != warm_starts.summary(stored):
        patch.status.update(fresh)


@kopf.on.delete(*_RESOURCE, registry=registry)
def cleanup(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Owner references cascade within the namespace; the objects in ``clrk`` and ``clrk-system``
    carry the owner label instead, and go here."""
    cluster = _cluster(memo)
    namespace, name = str(body.metadata.namespace), str(body.metadata.name)
    applier = Applier(cluster, ApplyOptions(), logger.info)
    _delete_owned(cluster, applier, ("TaskAgent", namespace, name))
    _refresh_egress(cluster, applier, namespace, gone=("TaskAgent", name))
    if getattr(memo, "warm_starts", None):
        memo.warm_starts.pop((namespace, name), None)


def run_operator(
    kubeconfig: str | None, context: str | None, namespaces: list[str], settings: PlatformSettings | None = None
) -> None:
    """Run until interrupted: every namespace, or only ``namespaces``. One replica at a time
    (standalone: no peering objects needed)."""
    kopf.configure(verbose=False)
    kopf.run(
        registry=registry,
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        memo=kopf.Memo(kubeconfig=kubeconfig, context=context, settings=settings),
    )
