"""Async invocations in Redis, shared by every ingress replica of a cluster.

Per run (``<prefix><id>``): a hash (``status``, the record as JSON — see
:mod:`clrk.ingress.run_encoding` —, and ``resultExpired`` once the cap took its result), the
result in ``<prefix><id>:result`` (a hash: status, content type, body) and stdout in the Redis
Stream ``<prefix><id>:out``: line *n* is the entry ``n-0``, so a reader resumes past line *n*
with ``XREAD … n-0`` and needs no other bookkeeping, and the run's end is the entry ``n-1``
(``end``) after its last line, written in the same script that makes the run final, so a
follower ends exactly after the last line. Each key lives until the run's ``expires_at``
(``PEXPIRE``) once it ended, and its timeout plus the retention while it is queued or running.

Every write that looks at the status is one Lua script (compare, write, index), so replicas
racing to start, finish or cancel a run agree on one winner. Indexes, under ``<prefix>index:``:
the set of unfinished ids, a sorted set of ended ids by ``expires_at`` (what :meth:`expire`
drops; a key may already be gone by its TTL) and one of results by ``finished_at`` with their
sizes and total (what the cap drops, oldest first). The scripts name keys outside ``KEYS``, so
this store wants one Redis, not a Redis Cluster.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncGenerator
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from clrk.ingress.records import Result, RunRecord
from clrk.ingress.run_encoding import decode_record, encode_record, ended
from clrk_runtime.protocol.invocations import Status

__all__ = ["RedisRunStore"]

# KEYS: 1 record, 2 output, 3 result, 4 unfinished, 5 expiring, 6 results, 7 result sizes, 8 result total.
# ARGV: 1 id, 2 condition (absent | expected | unended | kept), 3 expected statuses (space-separated),
#       4 status, 5 doc, 6 final (1/0), 7 ttl ms, 8 expires_at, 9 finished_at,
#       10 with result (1/0), 11 result status, 12 result content type, 13 result body.
# "kept" (update): the run exists and is not final, or keeps its final status. Returns 1 when written.
_WRITE = """
local final = {succeeded = true, failed = true, timed_out = true, cancelled = true}
local current = redis.call('HGET', KEYS[1], 'status')
local condition = ARGV[2]
if condition == 'absent' then
  if current then return 0 end
else
  if not current then return 0 end
  if condition == 'expected' then
    local found = false
    for status in string.gmatch(ARGV[3], '%S+') do
      if status == current then found = true end
    end
    if not found then return 0 end
  elseif condition == 'unended' then
    if final[current] then return 0 end
  elseif final[current] and current ~= ARGV[4] then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'status', ARGV[4], 'doc', ARGV[5])
if ARGV[6] == '1' then
  redis.call('SREM', KEYS[4], ARGV[1])
  redis.call('ZADD', KEYS[5], ARGV[8], ARGV[1])
  if not (current and final[current]) then
    local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
    local number = 0
    if #last > 0 then number = tonumber(string.match(last[1][1], '^(%d+)')) end
    redis.call('XADD', KEYS[2], number .. '-1', 'end', '1')
  end
  if ARGV[10] == '1' then
    redis.call('HSET', KEYS[3], 'status', ARGV[11], 'type', ARGV[12], 'body', ARGV[13])
    local size = string.len(ARGV[13])
    redis.call('INCRBY', KEYS[8], size - tonumber(redis.call('HGET', KEYS[7], ARGV[1]) or '0'))
    redis.call('HSET', KEYS[7], ARGV[1], size)
    redis.call('ZADD', KEYS[6], ARGV[9], ARGV[1])
  end
  if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('PEXPIRE', KEYS[3], ARGV[7]) end
else
  redis.call('SADD', KEYS[4], ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[7]) end
return 1
"""

# KEYS: 1 record, 2 output. ARGV: 1 max stream length, 2… lines. Returns the last number (0: not appended).
# The stream lives as long as the record.
_APPEND = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' then return 0 end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local number = 0
if #last > 0 then number = tonumber(string.match(last[1][1], '^(%d+)')) end
for i = 2, #ARGV do
  number = number + 1
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], number .. '-0', 'line', ARGV[i])
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return number
"""

# KEYS: 1 expiring, 2 results, 3 result sizes, 4 result total.
# ARGV: 1 prefix, 2 now, 3 cap (-1: none), 4 batch. Returns {runs dropped, results dropped, more}.
_EXPIRE = """
local prefix = ARGV[1]
local batch = tonumber(ARGV[4])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2], 'LIMIT', 0, batch)
for _, id in ipairs(gone) do
  redis.call('DEL', prefix .. id, prefix .. id .. ':result', prefix .. id .. ':out')
  local size = redis.call('HGET', KEYS[3], id)
  if size then
    redis.call('DECRBY', KEYS[4], size)
    redis.call('HDEL', KEYS[3], id)
  end
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
local capped = 0
local cap = tonumber(ARGV[3])
if cap >= 0 then
  local total = tonumber(redis.call('GET', KEYS[4]) or '0')
  while total > cap and capped < batch do
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)
    if #oldest == 0 then break end
    local id = oldest[1]
    redis.call('DEL', prefix .. id .. ':result')
    redis.call('ZREM', KEYS[2], id)
    local size = redis.call('HGET', KEYS[3], id)
    if size then
      total = redis.call('DECRBY', KEYS[4], size)
      redis.call('HDEL', KEYS[3], id)
    end
    if redis.call('EXISTS', prefix .. id) == 1 then redis.call('HSET', prefix .. id, 'resultExpired', '1') end
    capped = capped + 1
  end
end
local more = 0
if #gone == batch or capped == batch then more = 1 end
return {#gone, capped, more}
"""


def _number(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


class RedisRunStore:
    """A :class:`~clrk.ingress.records.RunStore` in Redis, for several ingress replicas.

    ``retention_s``: how long an ended run is kept (its ``expires_at``, when the writer set none).
    ``stream_max_lines``: about the most stdout lines a run's stream keeps (older ones are trimmed).
    ``max_result_bytes_total``: the most result bytes kept at once, or None for no cap;
    :meth:`expire` drops the oldest finished results past it (their records stay, marked
    ``result_expired``).
    """

    FOLLOW_BATCH = 1000
    """Lines a follower reads at once."""
    FOLLOW_RECHECK_S = 5.0
    """How long one ``XREAD`` blocks before the follower checks that its run still exists."""
    EXPIRE_BATCH = 500
    """Runs one expiry script drops at most (Redis runs nothing else meanwhile)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "clrk:run:",
        retention_s: float,
        stream_max_lines: int,
        max_result_bytes_total: int | None = None,
    ) -> None:
        self._redis: Any = aioredis.from_url(url)
        self._prefix = prefix
        self._retention_s = retention_s
        self._stream_max_lines = stream_max_lines
        self._max_result_bytes_total = max_result_bytes_total
        self._closed = False
        self._write = self._redis.register_script(_WRITE)
        self._append = self._redis.register_script(_APPEND)
        self._expire = self._redis.register_script(_EXPIRE)

    def _keys(self, invocation_id: str) -> list[str]:
        """Every key :data:`_WRITE` touches, in its order."""
        run, index = f"{self._prefix}{invocation_id}", f"{self._prefix}index:"
        return [
            run,
            f"{run}:out",
            f"{run}:result",
            f"{index}unfinished",
            f"{index}expiring",
            f"{index}results",
            f"{index}result-bytes",
            f"{index}result-total",
        ]

    def _ttl_ms(self, record: RunRecord) -> int:
        """How long the run's keys live from now: to its expiry once ended, else past its timeout."""
        if record.final and record.expires_at is not None:
            return max(1, math.ceil((record.expires_at - time.time()) * 1000))
        return math.ceil((record.timeout_s + self._retention_s) * 1000)

    async def _written(
        self,
        record: RunRecord,
        condition: str,
        expected: frozenset[Status] = frozenset(),
        result: Result | None = None,
    ) -> bool:
        record = ended(record, time.time(), self._retention_s)
        args: list[Any] = [
            record.invocation_id,
            condition,
            " ".join(sorted(str(s) for s in expected)),
            str(record.status),
            encode_record(record),
            "1" if record.final else "0",
            self._ttl_ms(record),
            repr(record.expires_at or 0.0),
            repr(record.finished_at or 0.0),
        ]
        if result is not None:
            args += ["1", result.http_status, result.content_type, result.body]
        else:
            args += ["0", 0, "", b""]
        return int(await self._write(keys=self._keys(record.invocation_id), args=args)) == 1

    async def create(self, record: RunRecord) -> None:
        if not await self._written(record, "absent"):
            raise ValueError(f"run {record.invocation_id} exists already")

    async def get(self, invocation_id: str) -> RunRecord | None:
        doc, gone = await self._redis.hmget(f"{self._prefix}{invocation_id}", ["doc", "resultExpired"])
        return None if doc is None else decode_record(doc, result_expired=gone is not None)

    async def update(self, record: RunRecord) -> None:
        await self._written(record, "kept")

    async def transition(self, invocation_id: str, expected: frozenset[Status], record: RunRecord) -> bool:
        if record.invocation_id != invocation_id:
            raise ValueError(f"record of {record.invocation_id} given for {invocation_id}")
        return bool(expected) and await self._written(record, "expected", expected)

    async def finish(self, record: RunRecord, result: Result) -> bool:
        if not record.final:
            raise ValueError(f"finish needs a final record, not one {record.status}")
        return await self._written(record, "unended", result=result)

    async def result(self, invocation_id: str) -> Result | None:
        status, content_type, body = await self._redis.hmget(
            f"{self._prefix}{invocation_id}:result", ["status", "type", "body"]
        )
        if body is None:
            return None
        return Result(http_status=int(status), content_type=content_type.decode(), body=bytes(body))

    async def append_output(self, invocation_id: str, lines: list[str]) -> None:
        if not lines:
            return
        await self._append(keys=self._keys(invocation_id)[:2], args=[self._stream_max_lines, *lines])

    async def follow(self, invocation_id: str, after: int = 0) -> AsyncGenerator[tuple[int, str], None]:
        """See :meth:`~clrk.ingress.records.RunStore.follow`. One ``XREAD BLOCK`` at a time, on a
        connection of the pool (a reader cancelled while it blocks drops that connection, which
        unblocks it in Redis); iterate it inside :func:`contextlib.aclosing`."""
        record, output = self._keys(invocation_id)[:2]
        if not await self._redis.exists(record):
            return
        last = f"{after}-0"
        while True:
            try:
                response = await self._redis.xread(
                    {output: last}, count=self.FOLLOW_BATCH, block=int(self.FOLLOW_RECHECK_S * 1000)
                )
            except RedisConnectionError:
                if self._closed:
                    return
                raise
            if not response:
                if not await self._redis.exists(record):
                    return
                continue
            for entry_id, fields in response[0][1]:
                if b"end" in fields:
                    return
                last = entry_id.decode()
                yield _number(entry_id), fields[b"line"].decode()

    async def unfinished(self) -> list[RunRecord]:
        index = f"{self._prefix}index:unfinished"
        ids = sorted(i.decode() for i in await self._redis.smembers(index))
        async with self._redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hmget(f"{self._prefix}{i}", ["doc", "resultExpired"])
            rows = await pipe.execute() if ids else []
        vanished = [i for i, (doc, _) in zip(ids, rows, strict=True) if doc is None]
        if vanished:
            await self._redis.srem(index, *vanished)
        kept = [decode_record(doc, result_expired=gone is not None) for doc, gone in rows if doc is not None]
        return sorted((r for r in kept if not r.final), key=lambda r: (r.created_at, r.invocation_id))

    async def expire(self, now: float) -> int:
        index = f"{self._prefix}index:"
        cap = -1 if self._max_result_bytes_total is None else self._max_result_bytes_total
        dropped = 0
        while True:
            runs, results, more = await self._expire(
                keys=[f"{index}expiring", f"{index}results", f"{index}result-bytes", f"{index}result-total"],
                args=[self._prefix, repr(now), cap, self.EXPIRE_BATCH],
            )
            dropped += int(runs) + int(results)
            if not int(more):
                return dropped

    async def aclose(self) -> None:
        """Close every connection; a follower blocked in ``XREAD`` ends."""
        self._closed = True
        await self._redis.aclose()
