"""Async invocations in a cluster: the ingress's pieces, composed from its settings.

Every ingress replica holds the same parts: runs in Redis (:class:`~clrk.ingress.redis_runs.
RedisRunStore`), a :class:`~clrk.ingress.brokering.BrokerDispatcher` that posts each accepted run
to the Broker, a :class:`~clrk.ingress.running.Runner` that raises rather than fails when the
agent is lost (the Broker delivers the run again), and the worker routes the Trigger delivers to
(:class:`~clrk.ingress.worker.Worker`), which hold a lease on each run they run
(:class:`~clrk.ingress.leases.RunLeases`). A run's token usage is what the egress gateway added
up in Redis (:class:`~clrk.egress.redis_usage.RedisUsage`); its callback is signed with the
``callback`` key of the agent's namespace, derived from the platform key.

Redis's password is read from its file once, here, and joins the URL only in memory: it is never
logged. Every replica also drops expired runs every minute (one atomic script each time, so
replicas doing it at once agree).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import redis.asyncio as aioredis

from clrk.egress.redis_usage import RedisUsage
from clrk.ingress import IngressSettings
from clrk.ingress.brokering import BrokerDispatcher
from clrk.ingress.callbacks import CallbackSender, callback_secret
from clrk.ingress.forwarding import Forwarder
from clrk.ingress.invocations import AsyncRuns
from clrk.ingress.leases import RunLeases
from clrk.ingress.records import Usage
from clrk.ingress.redis_runs import RedisRunStore
from clrk.ingress.running import Runner
from clrk.ingress.worker import Worker
from clrk_runtime.protocol.keys import namespace_key

__all__ = ["STREAM_MAX_LINES", "ClusterRuns", "cluster_runs", "with_password"]

log = logging.getLogger("clrk.ingress")

STREAM_MAX_LINES = 100_000
"""About the most stdout lines a run's event log keeps (older ones are trimmed; the shim's stdout
cap bounds the bytes)."""
EXPIRE_EVERY_S = 60.0


def with_password(url: str, password: str | None) -> str:
    """``url`` with ``password`` as its userinfo (``redis://:password@host…``)."""
    if not password:
        return url
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f":{quote(password, safe='')}@{host}"))


def usage_of(totals: dict[str, int] | None) -> Usage | None:
    if totals is None:
        return None
    return Usage(
        input_tokens=totals["inputTokens"],
        output_tokens=totals["outputTokens"],
        cache_creation_input_tokens=totals["cacheCreationInputTokens"],
        cache_read_input_tokens=totals["cacheReadInputTokens"],
        model_calls=totals["modelCalls"],
    )


@dataclass
class ClusterRuns:
    """What :func:`~clrk.ingress.app.create_app` is given (``runs``, and the worker's routes),
    and what must be closed at the end."""

    runs: AsyncRuns
    worker: Worker
    store: RedisRunStore
    dispatcher: BrokerDispatcher
    callbacks: CallbackSender
    redis: Any
    sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.sweeper = asyncio.create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(EXPIRE_EVERY_S)
            try:
                dropped = await self.store.expire(time.time())
            except Exception as exc:
                log.warning("dropping expired invocations failed: %s", type(exc).__name__)
                continue
            if dropped:
                log.info("dropped %d expired invocation(s)", dropped)

    async def aclose(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sweeper
        await self.worker.aclose()
        await self.dispatcher.aclose()
        await self.callbacks.aclose()
        await self.store.aclose()
        await self.redis.aclose()


async def cluster_runs(
    settings: IngressSettings, forwarder: Forwarder, platform_key: bytes | None
) -> ClusterRuns | None:
    """The async pieces, or None (logged) when the settings name no Broker or no Redis."""
    if not settings.broker_url or not settings.redis_url:
        log.info(
            "async invocations off (no broker URL or no Redis URL): Prefer: respond-async is answered synchronously"
        )
        return None
    if platform_key is None:
        raise ValueError("async invocations in a cluster need the platform key (CLRK_PLATFORM_KEY_FILE)")
    password = await asyncio.to_thread(settings.redis_password)
    url = with_password(settings.redis_url, password)
    retention = settings.async_retention_seconds
    store = RedisRunStore(
        url,
        retention_s=retention,
        stream_max_lines=STREAM_MAX_LINES,
        max_result_bytes_total=settings.async_results_max_bytes,
    )
    redis: Any = aioredis.from_url(url)
    usage = RedisUsage(client=redis, ttl_s=retention)

    async def read_usage(invocation_id: str) -> Usage | None:
        return usage_of(await usage.totals(invocation_id))

    def secret(namespace: str) -> str:
        return callback_secret(namespace_key(platform_key, "callback", namespace))

    callbacks = CallbackSender(
        store,
        secret,
        allow_loopback=False,
        attempts=settings.callback_attempts,
        backoff=settings.callback_backoff_seconds,
        timeout=settings.callback_timeout_seconds,
    )
    runner = Runner(
        store,
        forwarder,
        callbacks=callbacks,
        usage=read_usage,
        retention_s=retention,
        on_lost="raise",
        grace_s=settings.grace_seconds,
    )
    dispatcher = BrokerDispatcher(settings.broker_url, runner, platform_key)
    runs = AsyncRuns(
        store=store,
        dispatcher=dispatcher,
        retention_s=retention,
        heartbeat_s=settings.heartbeat_seconds,
        allow_loopback_callbacks=False,
    )
    leases = RunLeases(redis, ttl_s=settings.run_lease_seconds)
    worker = Worker(store, runner, leases, platform_key, retention_s=retention)
    return ClusterRuns(runs, worker, store, dispatcher, callbacks, redis)
