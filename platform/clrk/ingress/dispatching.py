"""Handing accepted async invocations to a runner: ``clrk dev``'s in-process dispatcher.

The routes (:mod:`.invocations`) talk to a :class:`Dispatcher`: :meth:`~Dispatcher.submit` once a
run is stored, :meth:`~Dispatcher.cancel` for ``DELETE``. :class:`LocalDispatcher` runs each one as
a task of this process (``clrk dev``); a cluster's dispatcher sends a CloudEvent to the Broker
instead, whose Trigger delivers it to a worker that calls :meth:`Runner.execute
<clrk.ingress.running.Runner.execute>`.

Nothing accepted is lost to a restart of ``clrk dev``: at :meth:`LocalDispatcher.start`, runs
that never reached their agent (``queued``, or claimed but still waiting for a sandbox) are run;
runs whose agent had started were cut when the previous process stopped (an agent's process does
not outlive its ``clrk dev``), so they end ``failed`` with error ``interrupted`` and their
callback says so. :meth:`LocalDispatcher.aclose` does the same at once (back in the queue, or
interrupted), so that a restart finds each run where it belongs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from clrk.ingress.records import RunRecord, RunStore
from clrk.ingress.running import Runner
from clrk_runtime.protocol.invocations import Status

__all__ = ["STOPPED_MESSAGE", "Dispatcher", "LocalDispatcher"]

log = logging.getLogger("clrk.ingress.dispatching")

STOPPED_MESSAGE = "clrk dev stopped while this invocation ran; it did not finish"


class Dispatcher(Protocol):
    async def submit(self, record: RunRecord) -> None:
        """Have the stored, queued ``record`` run (its answer does not wait for the run)."""
        ...

    async def cancel(self, invocation_id: str) -> RunRecord | None:
        """Cancel the run unless it ended first: the run as stored after (``cancelled``, or the
        state it had ended in), None when there is none. Its callback goes in the background."""
        ...


class LocalDispatcher:
    """Runs each invocation as a task of this process. ``expire_every``: seconds between sweeps
    of expired runs; ``stop_patience``: how long :meth:`aclose` lets the callbacks of the runs it
    cut try (once each)."""

    def __init__(
        self,
        runner: Runner,
        store: RunStore,
        *,
        expire_every: float = 60.0,
        stop_patience: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._runner = runner
        self._store = store
        self._expire_every = expire_every
        self._stop_patience = stop_patience
        self._clock = clock
        self._runs: dict[str, asyncio.Task[Any]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        """Resume what the previous process left: queued runs run, running ones are interrupted."""
        self._closed = False
        for record in await self._store.unfinished():
            if record.status is Status.QUEUED or await self._runner.release(record):
                await self.submit(record)
            else:
                ended, written = await self._runner.interrupt(record, STOPPED_MESSAGE)
                if written:
                    self._spawn(self._runner.notify(ended))
        self._sweeper = asyncio.create_task(self._sweep())

    async def submit(self, record: RunRecord) -> None:
        if self._closed:  # stopping: it stays queued, and the next start runs it
            return
        task = asyncio.create_task(self._runner.execute(record.invocation_id))
        self._runs[record.invocation_id] = task
        task.add_done_callback(lambda done: self._done(record.invocation_id, done))

    def _done(self, invocation_id: str, task: asyncio.Task[Any]) -> None:
        if self._runs.get(invocation_id) is task:
            del self._runs[invocation_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("invocation %s: its run failed inside clrk", invocation_id, exc_info=task.exception())

    async def cancel(self, invocation_id: str) -> RunRecord | None:
        record = await self._runner.cancel(invocation_id)
        if record is not None and record.status is Status.CANCELLED:
            task = self._runs.pop(invocation_id, None)
            if task is not None:  # leave the stream now rather than at the runner's next look
                task.cancel()
                await asyncio.wait({task})
            self._spawn(self._runner.notify(record))
        return record

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._expire_every)
            try:
                dropped = await self._store.expire(self._clock())
            except Exception:
                log.exception("dropping expired invocations failed")
                continue
            if dropped:
                log.info("dropped %d expired invocation(s)", dropped)

    async def aclose(self) -> None:
        """Stop: the runs under way are cut and end ``interrupted``; their callbacks (and those
        still retrying) get ``stop_patience`` seconds, then are recorded as not delivered."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        runs, self._runs = self._runs, {}
        for task in runs.values():
            task.cancel()
        await asyncio.gather(*runs.values(), return_exceptions=True)
        for invocation_id in runs:
            record = await self._store.get(invocation_id)
            if record is not None and not record.final and not await self._runner.release(record):
                ended, written = await self._runner.interrupt(record, STOPPED_MESSAGE)
                if written:
                    self._spawn(self._runner.notify(ended))
        if self._background:
            _, late = await asyncio.wait(set(self._background), timeout=self._stop_patience)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
