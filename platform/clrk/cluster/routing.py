"""The ingress in a cluster: its routing and caller tables, read from the API server.

``clrk ingress`` lists TaskAgents and Callers in every namespace, turns them into the same
:class:`~clrk.ingress.AgentTarget` and :class:`~clrk.ingress.CallerKey` tables ``clrk dev`` builds
from files, refreshes them every few seconds, and forwards over HTTP to each agent's Knative
Service (``<name>.<namespace>.svc.<cluster domain>``). A Caller's ``keySecretRef`` names a Secret
of the Caller's own namespace: the ingress reads it through the API server, so no Secret is mounted
into its pod, and it may ``get`` exactly the Secrets Callers name (Role ``clrk-ingress-callers`` of
their namespace, which ``clrk apply`` and the operator write: :mod:`~clrk.cluster.grants`); no
list, no watch. A Caller whose Secret it may not (yet) read is left out, with a log line saying
why. Building the tables is pure (:func:`routing_table`); :func:`serve_ingress` is the shell.

With a broker URL and a Redis URL in its settings (the Deployment's), it also takes async
invocations: runs kept in Redis, posted to Knative Eventing's Broker, and run by whichever replica
the Trigger delivers them to (:mod:`~clrk.cluster.async_runs`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Callable, Iterable
from typing import Any

import uvicorn
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from clrk.api import Caller, TaskAgent
from clrk.cluster.async_runs import cluster_runs
from clrk.cluster.connecting import Cluster
from clrk.cluster.grants import CALLER_SECRETS_ROLE
from clrk.errors import ClusterError
from clrk.ingress import AgentTarget, CallerKey, CallerKeys, HttpForwarder, IngressSettings, caller_key, create_app
from clrk_runtime.server.protocols import http_protocol

__all__ = ["SecretReader", "refresh", "routing_table", "secret_reader", "serve_ingress"]

SecretReader = Callable[[str, str, str], str | None]
"""``(namespace, name, key)`` → the value of that key of that Secret, or None."""

log = logging.getLogger("clrk.ingress")


def _spec_only(body: dict[str, Any]) -> dict[str, Any]:
    """The object as written: the server's ``status`` is not part of our models."""
    return {key: value for key, value in body.items() if key != "status"}


def _label(body: dict[str, Any]) -> str:
    meta = body.get("metadata", {})
    return f"{body.get('kind')} {meta.get('namespace')}/{meta.get('name')}"


def routing_table(
    agents: Iterable[dict[str, Any]], callers: Iterable[dict[str, Any]], secrets: SecretReader | None
) -> tuple[dict[str, AgentTarget], list[CallerKey]]:
    """Targets by ``namespace/name`` and caller keys; invalid objects are logged and left out
    (``clrk validate`` and the operator's status conditions say why to their authors)."""
    targets = {}
    for body in agents:
        try:
            agent = TaskAgent.model_validate(_spec_only(body))
        except ValidationError as exc:
            log.warning("%s left out of routing: %s", _label(body), exc.errors()[0]["msg"])
            continue
        callback = agent.spec.callback.url if agent.spec.callback is not None else None
        targets[agent.ref] = AgentTarget(agent.ref, agent.spec.timeout.total_seconds(), callback_url=callback)
    keys = []
    for body in callers:
        try:
            caller = Caller.model_validate(_spec_only(body))
        except ValidationError as exc:
            log.warning("%s left out: %s", _label(body), exc.errors()[0]["msg"])
            continue
        namespace = caller.metadata.namespace

        def read(name: str, key: str, namespace: str = namespace) -> str | None:
            return secrets(namespace, name, key) if secrets is not None else None

        entry = caller_key(caller, read)
        if entry is None:
            ref = caller.spec.key_secret_ref
            log.warning(
                "Caller %s left out: Secret %s/%s has no key %r (or cannot be read)",
                caller.ref,
                namespace,
                ref and ref.name,
                ref and ref.key,
            )
            continue
        keys.append(entry)
    return targets, keys


def _items(cluster: Cluster, kind: str) -> list[dict[str, Any]]:
    resource = cluster.resource("clrk.dev/v1alpha1", kind)
    with cluster.calling(f"list {kind}"):
        listing = resource.get()
    return [dict(item.to_dict()) for item in listing.items]


def _read_secret(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    """The Secret, or None (logged) when it is missing or the ingress may not read it; an
    unreachable API server raises, so that the last tables are kept."""
    resource = cluster.resource("v1", "Secret")
    with cluster.calling(f"Secret {namespace}/{name}"):
        try:
            return dict(resource.get(name=name, namespace=namespace).to_dict())
        except ApiException as exc:
            if exc.status == 404:
                log.warning("Secret %s/%s does not exist", namespace, name)
            elif exc.status == 403:
                log.warning(
                    "Secret %s/%s is not readable by the ingress: Role %s/%s grants it only the Secrets "
                    "the namespace's Callers name, as `clrk apply` or the operator last wrote them",
                    namespace,
                    name,
                    namespace,
                    CALLER_SECRETS_ROLE,
                )
            else:
                log.warning("Secret %s/%s cannot be read: HTTP %s %s", namespace, name, exc.status, exc.reason)
            return None


def secret_reader(cluster: Cluster) -> SecretReader:
    """Reads Secret keys through the API server, each Secret at most once per reader; a Secret
    that is missing or cannot be read is logged and counts as absent."""
    seen: dict[tuple[str, str], dict[str, Any] | None] = {}

    def read(namespace: str, name: str, key: str) -> str | None:
        if (namespace, name) not in seen:
            seen[(namespace, name)] = _read_secret(cluster, namespace, name)
        encoded = ((seen[(namespace, name)] or {}).get("data") or {}).get(key)
        if encoded is None:
            return None
        try:
            return base64.b64decode(encoded, validate=True).decode("utf-8").strip() or None
        except (binascii.Error, UnicodeDecodeError):
            log.warning("Secret %s/%s: key %r is not UTF-8 text", namespace, name, key)
            return None

    return read


def refresh(cluster: Cluster, forwarder: HttpForwarder, callers: CallerKeys) -> None:
    """Read TaskAgents, Callers and the Secrets the Callers name once, and swap both tables."""
    agents, found = _items(cluster, "TaskAgent"), _items(cluster, "Caller")
    targets, keys = routing_table(agents, found, secret_reader(cluster))
    forwarder.set_targets(targets)
    callers.replace(keys)


async def serve_ingress(
    settings: IngressSettings, cluster: Cluster, cluster_domain: str, interval: float = 5.0
) -> None:
    """Serve until SIGTERM, re-reading the tables every ``interval`` seconds."""
    # Read once, before serving: every forwarded request is signed with its namespace's key, and
    # a PingSource's run is let in by the schedule token this key makes for its agent.
    platform_key = await asyncio.to_thread(settings.platform_key)
    forwarder = HttpForwarder({}, cluster_domain, platform_key)
    callers = CallerKeys(open_mode=settings.open_mode)
    refresh(cluster, forwarder, callers)  # fail at start when the cluster is unusable
    log.info("routing %d agent(s); auth: %s", len(forwarder.targets()), "open" if callers.open_mode else "keys")

    async def keep_fresh() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(refresh, cluster, forwarder, callers)
            except ClusterError as exc:
                log.error("could not refresh the routing table, keeping the last one: %s", exc)

    async_runs = await cluster_runs(settings, forwarder, platform_key)
    app = create_app(
        forwarder,
        callers,
        settings,
        extra_routes=async_runs.worker.routes() if async_runs is not None else (),
        schedule_key=platform_key,
        runs=async_runs.runs if async_runs is not None else None,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        access_log=False,
        http=http_protocol(settings.head_timeout_seconds),
    )
    server = uvicorn.Server(config)
    refresher = asyncio.create_task(keep_fresh())
    if async_runs is not None:
        async_runs.start()
    try:
        await server.serve()
    finally:
        refresher.cancel()
        if async_runs is not None:
            await async_runs.aclose()
        await forwarder.aclose()
