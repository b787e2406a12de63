"""Capacity: the warm pool, the concurrency bound and the bounded queue in front of it.

``warm`` sandboxes wait created (dirs made and uid taken; under bubblewrap, the stub started too)
and are refilled in the background after each use; :meth:`SandboxPool.start` returns (the shim
is ready) once they all exist. With warm start (:mod:`~clrk_runtime.service.warming`) a warm
sandbox joins the pool only once its agent, started ahead, said it was ready; one whose agent
dies while it waits leaves the pool at once and is replaced, never handed a request; one taken by
an invocation is replaced once that invocation has had its first moments (:data:`REFILL_AFTER`).
``max_concurrency`` sandboxes run at once; ``queue_size``
invocations may wait for a slot, and past that :class:`NoCapacity` is raised (the caller answers
503).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

from clrk_runtime.sandbox.sandboxes import Sandbox, SandboxKind, SandboxSpec, create_sandbox
from clrk_runtime.service.warming import WarmStarts, WarmStartStats

__all__ = ["REFILL_AFTER", "NoCapacity", "PoolStats", "SandboxPool"]

_log = logging.getLogger(__name__)
_RETRY_PAUSE = 1.0
"""Seconds before retrying after a warm sandbox could not be made."""
REFILL_AFTER = 0.5
"""Seconds after a warm-started sandbox was taken before its replacement starts its agent, unless
an invocation ends sooner: an agent's start-up (a CLI loading its bundle) takes a core for a
while, and the invocation that was just handed its sandbox needs the CPU most in its first
moments; past them it mostly waits for its model."""


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
    warm_start: WarmStartStats
    """``warm`` counts the sandboxes ready for a request: with warm start, those whose agent said so."""


class SandboxPool:
    def __init__(self, spec: SandboxSpec, warm_starts: WarmStarts) -> None:
        """``warm_starts``: whether and how warm sandboxes start their agent ahead."""
        settings = spec.settings
        self.spec = spec
        self.warm_starts = warm_starts
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
        self._deferred = False
        """A refill waits (see :meth:`_refill_soon`)."""
        self._later: asyncio.TimerHandle | None = None

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
            warm_start=self.warm_starts.stats,
        )

    async def start(self) -> None:
        """Fill the warm pool (returns once it is full), then keep it full in the background."""
        made = await asyncio.gather(*(self._make_warm_until_made() for _ in range(self.warm_target)))
        for sandbox in made:
            self._add(sandbox)
        self._filler = asyncio.create_task(self._refill(), name="clrk-warm-pool")

    async def _make_warm_until_made(self) -> Sandbox:
        while (sandbox := await self._make_warm()) is None:
            pass  # its agent failed to start (logged); after a few, warm start falls back
        return sandbox

    async def _make_warm(self) -> Sandbox | None:
        """A warm sandbox; with warm start its agent started and ready (None: it failed to start)."""
        ahead = self.warm_starts.active
        sandbox = await create_sandbox(self.spec, warm=True, ahead=ahead)
        if not ahead:
            return sandbox
        try:
            ready = await self.warm_starts.start(sandbox)
        except BaseException:
            await asyncio.shield(sandbox.close())
            raise
        if not ready:
            await sandbox.close()
            return None
        return sandbox

    def _add(self, sandbox: Sandbox) -> None:
        """Into the pool; a started agent that dies while it waits takes its sandbox out."""
        self._warm.append(sandbox)
        if sandbox.started_ahead and sandbox.process is not None:
            sandbox.process.exit_status.add_done_callback(functools.partial(self._died, sandbox))

    def _died(self, sandbox: Sandbox, status: asyncio.Future[int]) -> None:
        if sandbox not in self._warm:
            return  # claimed meanwhile: its invocation reports the exit
        self._warm.remove(sandbox)
        self._lost(sandbox, status)

    def _lost(self, sandbox: Sandbox, status: asyncio.Future[int]) -> None:
        code = status.result() if not status.cancelled() else None
        self.warm_starts.failed(f"exited with status {code} while it waited for its request")
        self._close_later(sandbox)
        self._wanted.set()

    def _take_warm(self) -> Sandbox | None:
        """A ready sandbox from the pool, if any (one whose agent just died is passed over)."""
        while self._warm:
            sandbox = self._warm.popleft()
            process = sandbox.process
            if not sandbox.started_ahead or process is None:
                self._wanted.set()
                return sandbox
            if not process.exit_status.done():
                self._refill_soon()
                return sandbox  # out of the pool: _died leaves it to its invocation now
            self._lost(sandbox, process.exit_status)
        return None

    def _refill_soon(self) -> None:
        """Refill after :data:`REFILL_AFTER`, or once an invocation ends (:meth:`release`)."""
        self._deferred = True
        if self._later is None or self._later.cancelled():
            self._later = asyncio.get_running_loop().call_later(REFILL_AFTER, self._refill_now)

    def _refill_now(self) -> None:
        self._deferred = False
        if self._later is not None:
            self._later.cancel()
            self._later = None
        self._wanted.set()

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
            if (sandbox := self._take_warm()) is not None:
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
        self._close_later(creating.result())

    def _close_later(self, sandbox: Sandbox) -> None:
        sandbox.kill()
        closing = asyncio.ensure_future(sandbox.close())
        self._orphans.add(closing)
        closing.add_done_callback(self._orphans.discard)

    def release(self) -> None:
        self._busy -= 1
        self._slots.release()
        if self._deferred:
            self._refill_now()

    async def close(self) -> None:
        """Stop refilling and remove every waiting sandbox."""
        self._closing = True
        if self._later is not None:
            self._later.cancel()
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
                    sandbox = await self._make_warm()
                except Exception:  # keep refilling: a failure now may pass (fds, memory)
                    _log.exception("could not make a warm sandbox; retrying")
                    await asyncio.sleep(_RETRY_PAUSE)
                    continue
                if sandbox is None:
                    continue  # its agent failed to start (logged and counted)
                if self._closing:
                    await sandbox.close()
                    return
                self._add(sandbox)
