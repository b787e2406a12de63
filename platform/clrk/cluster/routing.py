"""The ingress in a cluster: its routing and caller tables, read from the API server.

``clrk ingress`` lists TaskAgents and Callers in every namespace, turns them into the same
:class:`~clrk.ingress.AgentTarget` and :class:`~clrk.ingress.CallerKey` tables ``clrk dev`` builds
from files, refreshes them every few seconds, and forwards over HTTP to each agent's Knative
Service. Building the tables is pure (:func:`routing_table`); :func:`serve_ingress` is the shell.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import uvicorn
from pydantic import ValidationError

from clrk.api import Caller, TaskAgent
from clrk.api.egress import SecretRef
from clrk.cluster.connecting import Cluster
from clrk.egress.secrets import SecretSource
from clrk.errors import ClusterError
from clrk.ingress import AgentTarget, CallerKey, CallerKeys, HttpForwarder, IngressSettings, caller_key, create_app
from clrk_runtime.server.protocols import http_protocol

__all__ = ["routing_table", "serve_ingress"]

log = logging.getLogger("clrk.ingress")


def _spec_only(body: dict[str, Any]) -> dict[str, Any]:
    """The object as written: the server's ``status`` is not part of our models."""
    return {key: value for key, value in body.items() if key != "status"}


def _label(body: dict[str, Any]) -> str:
    meta = body.get("metadata", {})
    return f"{body.get('kind')} {meta.get('namespace')}/{meta.get('name')}"


def routing_table(
    agents: Iterable[dict[str, Any]], callers: Iterable[dict[str, Any]], secrets: SecretSource | None
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
        targets[agent.ref] = AgentTarget(agent.ref, agent.spec.timeout.total_seconds())
    keys = []
    for body in callers:
        try:
            caller = Caller.model_validate(_spec_only(body))
        except ValidationError as exc:
            log.warning("%s left out: %s", _label(body), exc.errors()[0]["msg"])
            continue
        key = caller_key(caller, lambda name, key: secrets.get(SecretRef(name=name, key=key)) if secrets else None)
        if key is None:
            ref = caller.spec.key_secret_ref
            log.warning(
                "Caller %s left out: secret %s/%s is not mounted", caller.ref, ref and ref.name, ref and ref.key
            )
            continue
        keys.append(key)
    return targets, keys


def _items(cluster: Cluster, kind: str) -> list[dict[str, Any]]:
    resource = cluster.resource("clrk.dev/v1alpha1", kind)
    with cluster.calling(f"list {kind}"):
        listing = resource.get()
    return [dict(item.to_dict()) for item in listing.items]


def refresh(cluster: Cluster, forwarder: HttpForwarder, callers: CallerKeys, secrets: SecretSource | None) -> None:
    """Read TaskAgents and Callers once and swap both tables."""
    targets, keys = routing_table(_items(cluster, "TaskAgent"), _items(cluster, "Caller"), secrets)
    forwarder.set_targets(targets)
    callers.replace(keys)


async def serve_ingress(
    settings: IngressSettings, cluster: Cluster, secrets: SecretSource | None, interval: float = 5.0
) -> None:
    """Serve until SIGTERM, re-reading the tables every ``interval`` seconds."""
    forwarder = HttpForwarder({})
    callers = CallerKeys(open_mode=settings.open_mode)
    refresh(cluster, forwarder, callers, secrets)  # fail at start when the cluster is unusable
    log.info("routing %d agent(s); auth: %s", len(forwarder.targets()), "open" if callers.open_mode else "keys")

    async def keep_fresh() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(refresh, cluster, forwarder, callers, secrets)
            except ClusterError as exc:
                log.error("could not refresh the routing table, keeping the last one: %s", exc)

    app = create_app(forwarder, callers, settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        access_log=False,
        http=http_protocol(settings.head_timeout_seconds),
    )
    server = uvicorn.Server(config)
    refresher = asyncio.create_task(keep_fresh())
    try:
        await server.serve()
    finally:
        refresher.cancel()
        await forwarder.aclose()
