"""Budget counters in Redis, for several gateway replicas: the same contract as SQLite's.

Per agent, one hash of bucket start → tokens (see :mod:`clrk.egress.budgets`); reserving is one
Lua script, so it is atomic across replicas. The key expires a window after its last use.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from clrk.api.egress import Budget
from clrk.egress.budgets import BudgetExhausted, Reservation, bucket_of, retry_after

__all__ = ["RedisBudgets"]

# KEYS[1] = hash; ARGV = start, gone, ceiling, tokens, ttl_ms.
# Returns {1} when reserved, else {0, start1, tokens1, start2, tokens2, ...} (for retry-after).
_RESERVE = """
local start, gone = tonumber(ARGV[1]), tonumber(ARGV[2])
local ceiling, tokens = tonumber(ARGV[3]), tonumber(ARGV[4])
local all = redis.call('HGETALL', KEYS[1])
local used, live = 0, {}
for i = 1, #all, 2 do
  if tonumber(all[i]) <= gone then
    redis.call('HDEL', KEYS[1], all[i])
  else
    used = used + tonumber(all[i + 1])
    table.insert(live, all[i]); table.insert(live, all[i + 1])
  end
end
if used + tokens > ceiling then
  local out = {0}
  for _, v in ipairs(live) do table.insert(out, v) end
  return out
end
redis.call('HINCRBY', KEYS[1], ARGV[1], tokens)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {1}
"""

_SETTLE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  local left = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
  if left < 0 then redis.call('HSET', KEYS[1], ARGV[1], 0) end
end
return 0
"""


def _field(start: float) -> str:
    return repr(float(start))


class RedisBudgets:
    def __init__(self, url: str, *, prefix: str = "clrk:budget:", password: str | None = None) -> None:
        self._redis: Any = aioredis.from_url(url, password=password)
        self._prefix = prefix
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)

    def _key(self, agent: str) -> str:
        return f"{self._prefix}{agent}"

    async def reserve(self, agent: str, tokens: int, budget: Budget, now: float) -> Reservation:
        start, gone = bucket_of(now, budget)
        ttl_ms = int(budget.window_seconds * 2000) + 60_000
        result = await self._reserve(
            keys=[self._key(agent)],
            args=[_field(start), gone, budget.tokens, tokens, ttl_ms],
        )
        if int(result[0]) != 1:
            live = sorted((float(result[i]), int(result[i + 1])) for i in range(1, len(result), 2))
            raise BudgetExhausted(agent, retry_after(live, tokens, budget, now))
        return Reservation(agent, start, tokens)

    async def settle(self, reservation: Reservation, tokens: int) -> None:
        if tokens != reservation.tokens:
            await self._settle(
                keys=[self._key(reservation.agent)],
                args=[_field(reservation.bucket), tokens - reservation.tokens],
            )

    async def used(self, agent: str, budget: Budget, now: float) -> int:
        _, gone = bucket_of(now, budget)
        values = await self._redis.hgetall(self._key(agent))
        return sum(int(v) for k, v in values.items() if float(k) > gone)

    async def close(self) -> None:
        await self._redis.aclose()
