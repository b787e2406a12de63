"""Which ingress replica is running an async invocation right now: a lease in Redis.

A replica that runs a run holds ``<prefix><id>`` (its own random holder name, ``ttl_s``), and
renews it every few seconds while the run goes. The Broker may deliver a run again while it
runs (its delivery's connection broke, or a retry crossed): the replica that gets it sees the
lease live and answers 503, so the Broker tries later. A replica that died holds nothing after
``ttl_s``: the next delivery finds the run ``running`` with no lease, and runs it again.

Acquiring is ``SET NX PX`` (atomic: of two replicas racing, one wins); renewing and releasing
are scripts that act only for the holder, so a replica whose lease already passed to another
cannot take it back or drop it.
"""

from __future__ import annotations

import secrets
from typing import Any

__all__ = ["RunLeases"]

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RunLeases:
    """Leases of one replica. ``client``: a ``redis.asyncio`` client; ``holder``: this replica's
    name in the leases it takes (random when not given); ``ttl_s``: how long a lease lives
    without renewal (how long a dead replica's run waits before another takes it)."""

    def __init__(self, client: Any, *, holder: str | None = None, ttl_s: float = 15.0, prefix: str = "clrk:lease:"):
        self._redis = client
        self.holder = holder or secrets.token_hex(8)
        self.ttl_s = ttl_s
        self._prefix = prefix
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    def _key(self, invocation_id: str) -> str:
        return f"{self._prefix}{invocation_id}"

    async def acquire(self, invocation_id: str) -> bool:
        """Take the lease unless someone holds it; True when taken."""
        return bool(await self._redis.set(self._key(invocation_id), self.holder, nx=True, px=self._ttl_ms))

    async def renew(self, invocation_id: str) -> bool:
        """Extend this replica's lease by ``ttl_s``; False when it is no longer ours (it expired)."""
        return int(await self._renew(keys=[self._key(invocation_id)], args=[self.holder, self._ttl_ms])) == 1

    async def release(self, invocation_id: str) -> None:
        """Drop this replica's lease (another replica's is left alone)."""
        await self._release(keys=[self._key(invocation_id)], args=[self.holder])

    async def remaining(self, invocation_id: str) -> float | None:
        """Seconds the lease has left, or None when nobody holds it."""
        left = int(await self._redis.pttl(self._key(invocation_id)))
        return left / 1000 if left > 0 else None
