"""Capacity: the warm pool, the concurrency bound and the bounded queue in front of it.

``warm`` sandboxes wait created (dirs made and uid taken; under bubblewrap, the stub started too)
and are refilled in the background after each use; :meth:`SandboxPool.start` returns (the shim
is ready) once they all exist. ``max_concurrency`` sandboxes run at once; ``queue_size``
invocations may wait for a slot, and past that :class:`NoCapacity` is raised (the caller answers
503).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

from clrk_runtime.sandbox.sandboxes import Sandbox, SandboxKind, SandboxSpec, create_sandbox

__all__ = ["NoCapacity", "PoolStats", "SandboxPool"]

_log = logging.getLogger(__name__)
_RETRY_PAUSE = 1.0
"""Seconds before retrying after a warm sandbox could not be made."""


class NoCapacity(Exception):
    """Every slot is busy and the queue is full (or the pool is draining)."""


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A live snapshot, e.g. for a TUI."""

    kind: SandboxKind
    warm: int
    busy: int
    queued: int
    warm_target: int
    max_concurrency: int
    queue_size: int


class SandboxPool:
    def __init__(self, spec: SandboxSpec) -> None:
        settings = spec.settings
        self.spec = spec
        self.warm_target = settings.warm_pool
        self.max_concurrency = settings.max_concurrency
        self.queue_size = settings.queue_size
        self._warm: deque[Sandbox] = deque()
        self._slots = asyncio.Semaphore(self.max_concurrency)
        self._busy = 0
        self._queued = 0
        self._wanted = asyncio.Event()
        self._filler: asyncio.Task[None] | None = None
        self._closing = False
        self._orphans: set[asyncio.Future[Any]] = set()
        """Sandboxes still being made for invocations that gave up, and their closing."""

    @property
    def saturated(self) -> bool:
        """Every sandbox is busy and the queue is full: the next acquire would be refused."""
        return self._closing or (self._slots.locked() and self._queued >= self.queue_size)

    @property
    def stats(self) -> PoolStats:
        return PoolStats(
            kind=self.spec.kind,
            warm=len(self._warm),
            busy=self._busy,
            queued=self._queued,
            warm_target=self.warm_target,
            max_concurrency=self.max_concurrency,
            queue_size=self.queue_size,
        )

    async def start(self) -> None:
        """Fill the warm pool (returns once it is full), then keep it full in the background."""
        made = await asyncio.gather(*(create_sandbox(self.spec, warm=True) for _ in range(self.warm_target)))
        self._warm.extend(made)
        self._filler = asyncio.create_task(self._refill(), name="clrk-warm-pool")

    async def acquire(self) -> Sandbox:
        """A sandbox for one invocation; the caller closes it, then calls :meth:`release`."""
        if self._closing:
            raise NoCapacity("the shim is shutting down")
        if self._slots.locked():
            if self._queued >= self.queue_size:
                raise NoCapacity("every sandbox is busy and the queue is full")
            self._queued += 1
            try:
                await self._slots.acquire()
            finally:
                self._queued -= 1
        else:
            await self._slots.acquire()
        self._busy += 1
        try:
            if self._warm:
                sandbox = self._warm.popleft()
                self._wanted.set()
                return sandbox
            creating = asyncio.ensure_future(create_sandbox(self.spec))
            try:
                return await asyncio.shield(creating)
            except asyncio.CancelledError:
                # The deadline passed while the sandbox was being made: close it once it exists,
                # rather than leaving its process and pipes behind.
                self._orphans.add(creating)
                creating.add_done_callback(self._discard)
                raise
        except BaseException:
            self.release()
            raise

    def _discard(self, creating: asyncio.Future[Sandbox]) -> None:
        self._orphans.discard(creating)
        if creating.cancelled() or creating.exception() is not None:
            return
        sandbox = creating.result()
        sandbox.kill()
        closing = asyncio.ensure_future(sandbox.close())
        self._orphans.add(closing)
        closing.add_done_callback(self._orphans.discard)

    def release(self) -> None:
        self._busy -= 1
        self._slots.release()

    async def close(self) -> None:
        """Stop refilling and remove every waiting sandbox."""
        self._closing = True
        if self._filler is not None:
            self._filler.cancel()
            await asyncio.gather(self._filler, return_exceptions=True)
        waiting = list(self._warm)
        self._warm.clear()
        await asyncio.gather(*(sandbox.close() for sandbox in waiting))
        while self._orphans:
            await asyncio.gather(*list(self._orphans), return_exceptions=True)

    async def _refill(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            while len(self._warm) < self.warm_target and not self._closing:
                try:
                    sandbox = await create_sandbox(self.spec, warm=True)
                except Exception:  # keep refilling: a failure now may pass (fds, memory)
                    _log.exception("could not make a warm sandbox; retrying")
                    await asyncio.sleep(_RETRY_PAUSE)
                    continue
                if self._closing:
                    await sandbox.close()
                    return
                self._warm.append(sandbox)
