"""Each invocation's token totals in Redis, where every ingress replica can read them.

In a cluster the gateway and the ingress are different pods, and an async run ends on whichever
ingress replica ran it: the gateway adds each finished model call to one hash per invocation
(``clrk:usage:<id>``: ``inputTokens``, ``outputTokens``, ``cacheCreationInputTokens``,
``cacheReadInputTokens``, ``modelCalls``; ``HINCRBY``, so gateway replicas add up), which lives
``ttl_s`` past its last call; the ingress reads it (:meth:`RedisUsage.totals`) when the run ends.

:meth:`RedisUsage.record` is a :class:`~clrk.egress.usage.UsageStore` listener: it is called on
the event loop and never waits there, handing the write to a task; a failed write is logged and
the call is still answered (token totals are a report, not a gate: budgets are
:mod:`~clrk.egress.redis_budgets`').
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis

from clrk.egress.usage import ModelCall

__all__ = ["FIELDS", "RedisUsage"]

log = logging.getLogger(__name__)

FIELDS = ("inputTokens", "outputTokens", "cacheCreationInputTokens", "cacheReadInputTokens", "modelCalls")
"""The hash's fields: the names of the status document's ``usage``."""


def _increments(call: ModelCall) -> dict[str, int]:
    u = call.usage
    return {
        "inputTokens": u.input_tokens,
        "outputTokens": u.output_tokens,
        "cacheCreationInputTokens": u.cache_creation_input_tokens,
        "cacheReadInputTokens": u.cache_read_input_tokens,
        "modelCalls": 1,
    }


class RedisUsage:
    """Token totals per invocation in Redis. ``client``: a ``redis.asyncio`` client (or ``url``,
    with ``password``);
    ``ttl_s``: how long a total is kept past its last call (the ingress keeps results a day)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        ttl_s: float = 86400.0,
        prefix: str = "clrk:usage:",
        password: str | None = None,
    ) -> None:
        if client is None:
            if url is None:
                raise ValueError("RedisUsage needs a url or a client")
            client = aioredis.from_url(url, password=password)
            self._owned = True
        else:
            self._owned = False
        self._redis: Any = client
        self._ttl_ms = int(ttl_s * 1000)
        self._prefix = prefix
        self._pending: set[asyncio.Task[None]] = set()

    def key(self, invocation_id: str) -> str:
        return f"{self._prefix}{invocation_id}"

    async def add(self, call: ModelCall) -> None:
        """Add one finished call to its invocation's totals (one round trip)."""
        key = self.key(call.invocation_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            for name, amount in _increments(call).items():
                pipe.hincrby(key, name, amount)
            pipe.pexpire(key, self._ttl_ms)
            await pipe.execute()

    def record(self, call: ModelCall) -> None:
        """The :meth:`UsageStore.subscribe <clrk.egress.usage.UsageStore.subscribe>` listener."""
        task = asyncio.get_running_loop().create_task(self._add_logged(call))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _add_logged(self, call: ModelCall) -> None:
        try:
            await self.add(call)
        except Exception as exc:  # Redis down: the call itself went through; say so, once per call
            log.warning("invocation %s: token usage not written to Redis: %s", call.invocation_id, type(exc).__name__)

    async def totals(self, invocation_id: str) -> dict[str, int] | None:
        """The invocation's totals by :data:`FIELDS`, or None when the gateway saw no model call."""
        values = await self._redis.hgetall(self.key(invocation_id))
        if not values:
            return None
        found = {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in values.items()}
        return {name: found.get(name, 0) for name in FIELDS}

    async def close(self) -> None:
        """Let pending writes finish, then close the client if this object made it."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        if self._owned:
            await self._redis.aclose()
