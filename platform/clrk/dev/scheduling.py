"""TaskSchedules in ``clrk dev``: a cron scheduler that invokes agents through the ingress.

Each run is a CloudEvent posted to the in-process ingress where a PingSource posts in a cluster:
the schedule route, with the agent's schedule token (``clrk dev``'s own platform key makes it), so
it takes a caller's path (deadline, signed forward, spans, the requests pane) with no Caller key.
It is the event a PingSource sends in a cluster: type
``dev.knative.sources.ping`` (:data:`~clrk.api.schedules.SCHEDULE_EVENT_TYPE`), source
``/apis/v1/namespaces/<ns>/pingsources/<name>``, the schedule's JSON object as ``data``; an agent
reads the same envelope either way. Schedules are read as the PingSource reads them (robfig/cron,
:mod:`clrk.api.cron`), in the schedule's time zone, daylight-saving changes included. Runs missed
while ``clrk dev`` was not running are not replayed: at start, each schedule waits for its next
time from now (as a PingSource does in a cluster).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from croniter import croniter
from uuid6 import uuid7

from clrk.api.schedules import SCHEDULE_EVENT_TYPE, TaskSchedule, schedule_event_source
from clrk_runtime.protocol.headers import AGENT_HEADER

__all__ = ["SCHEDULE_EVENT_TYPE", "Scheduler", "next_run", "schedule_request"]

log = logging.getLogger("clrk.dev.schedules")

Post = Callable[[dict[str, str], bytes], Awaitable[int]]
"""Sends one request to the ingress; returns the status."""


def next_run(schedule: TaskSchedule, after: datetime) -> datetime:
    """The first time strictly after ``after`` (aware) at which ``schedule`` fires, in UTC."""
    zone = ZoneInfo(schedule.spec.zone)
    parsed = schedule.spec.parsed
    # robfig's day rule, spelled for croniter: either day field matching runs the day only
    # when both are restricted.
    runs = croniter(parsed.expression, after.astimezone(zone), day_or=parsed.day_or)
    following: datetime = runs.get_next(datetime)
    return following.astimezone(UTC)


def schedule_request(schedule: TaskSchedule, at: datetime) -> tuple[dict[str, str], bytes]:
    """Headers and body of the binary-mode CloudEvent for one run."""
    headers = {
        AGENT_HEADER: f"{schedule.metadata.namespace}/{schedule.spec.agent}",
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": str(uuid7()),
        "ce-source": schedule_event_source(schedule.metadata.namespace, schedule.metadata.name),
        "ce-type": SCHEDULE_EVENT_TYPE,
        "ce-time": at.isoformat().replace("+00:00", "Z"),
    }
    return headers, json.dumps(schedule.spec.data).encode()


class Scheduler:
    """Runs every schedule until cancelled; ``replace`` swaps the set on reload."""

    def __init__(self, post: Post, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._post = post
        self._clock = clock
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def replace(self, schedules: list[TaskSchedule]) -> None:
        self.stop()
        for schedule in schedules:
            self._tasks[schedule.ref] = asyncio.create_task(self._run(schedule), name=f"schedule {schedule.ref}")

    def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks = {}

    async def _run(self, schedule: TaskSchedule) -> None:
        while True:
            at = next_run(schedule, self._clock())
            await asyncio.sleep(max(0.0, (at - self._clock()).total_seconds()))
            headers, body = schedule_request(schedule, at)
            try:
                status = await self._post(headers, body)
            except Exception:
                log.exception("schedule %s: run at %s failed", schedule.ref, at.isoformat())
                continue
            log.info("schedule %s: ran %s → %d", schedule.ref, headers["ce-id"], status)
