from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from clrk.api.schedules import TaskSchedule
from clrk.dev.scheduling import SCHEDULE_EVENT_TYPE, Scheduler, next_run, schedule_request


def _schedule(cron: str, zone: str = "UTC") -> TaskSchedule:
    return TaskSchedule.model_validate(
        {
            "metadata": {"name": "morning", "namespace": "team"},
            "spec": {"agent": "digest", "schedule": cron, "timeZone": zone, "data": {"k": [1, 2]}},
        }
    )


def test_next_run_honours_the_time_zone_and_daylight_saving() -> None:
    schedule = _schedule("30 7 * * *", "Europe/Paris")
    winter = next_run(schedule, datetime(2026, 1, 10, 12, 0, tzinfo=UTC))
    assert winter == datetime(2026, 1, 11, 6, 30, tzinfo=UTC)  # 07:30 CET = 06:30 UTC
    summer = next_run(schedule, datetime(2026, 7, 10, 12, 0, tzinfo=UTC))
    assert summer == datetime(2026, 7, 11, 5, 30, tzinfo=UTC)  # 07:30 CEST = 05:30 UTC


def test_missed_runs_are_not_replayed() -> None:
    schedule = _schedule("0 * * * *")
    start = datetime(2026, 3, 1, 10, 59, 59, tzinfo=UTC)
    assert next_run(schedule, start) == datetime(2026, 3, 1, 11, 0, tzinfo=UTC)


def test_schedule_request_is_a_binary_cloudevent_for_the_agent() -> None:
    at = datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    headers, body = schedule_request(_schedule("0 * * * *"), at)
    assert headers["X-Clrk-TaskAgent"] == "team/digest"
    assert headers["ce-type"] == SCHEDULE_EVENT_TYPE
    assert headers["ce-type"] == "dev.knative.sources.ping", "the type a PingSource gives its events"
    assert headers["ce-source"] == "/apis/v1/namespaces/team/pingsources/morning"
    assert headers["ce-time"] == "2026-03-01T11:00:00Z"
    assert json.loads(body) == {"k": [1, 2]}


async def test_scheduler_posts_at_each_time() -> None:
    sent: list[dict[str, str]] = []
    fired = asyncio.Event()

    async def post(headers: dict[str, str], body: bytes) -> int:
        sent.append(headers)
        fired.set()
        return 200

    # A clock one millisecond before a minute boundary: the first run is due at once.
    base = datetime(2026, 3, 1, 10, 59, 59, 999000, tzinfo=UTC)
    ticks = iter([base, base] + [datetime(2026, 3, 1, 11, 0, 1, tzinfo=UTC)] * 10)
    scheduler = Scheduler(post, clock=lambda: next(ticks, datetime(2026, 3, 1, 11, 0, 1, tzinfo=UTC)))
    scheduler.replace([_schedule("* * * * *")])
    await asyncio.wait_for(fired.wait(), 5)
    scheduler.stop()
    assert sent[0]["ce-time"] == "2026-03-01T11:00:00Z"
