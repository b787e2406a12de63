"""TaskSchedules accept what Knative's PingSource accepts (robfig/cron, five fields) and refuse the
rest with an error naming the field; both modes deliver the same CloudEvent."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from clrk.api.cron import parse_cron
from clrk.api.schedules import SCHEDULE_EVENT_TYPE, TaskSchedule
from clrk.dev.scheduling import next_run, schedule_request
from clrk.errors import SpecError
from clrk.manifests import compile_bundle, load_bundle
from clrk.manifests.documents import dump_all

AGENT = {
    "apiVersion": "clrk.dev/v1alpha1",
    "kind": "TaskAgent",
    "metadata": {"name": "bot", "namespace": "team"},
    "spec": {"template": {"spec": {"image": "example.com/bot:1", "command": ["cat"]}}},
}


def schedule(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "clrk.dev/v1alpha1",
        "kind": "TaskSchedule",
        "metadata": {"name": "nightly", "namespace": "team"},
        "spec": {"agent": "bot", "schedule": "0 3 * * *", **spec},
    }


def load(tmp_path: Path, *docs: Any) -> list[dict[str, Any]]:
    path = tmp_path / "manifests.yaml"
    path.write_text(dump_all(docs))
    return compile_bundle(load_bundle([str(path)]))


def error(tmp_path: Path, doc: dict[str, Any]) -> SpecError:
    path = tmp_path / "manifests.yaml"
    path.write_text(dump_all([AGENT, doc]))
    with pytest.raises(SpecError) as info:
        load_bundle([str(path)])
    assert str(path) in str(info.value)
    return info.value


@pytest.mark.parametrize(
    "cron",
    [
        "*/5 * * * *",
        "30 7 * * 1-5",
        "30 7 * * MON-fri",
        "0 0 1,15 jan,Jul *",
        "0 12 ? * 0",
        "5/15 * * * *",  # robfig: N/step is N-max/step
        "0 0 * * 6",
        "@hourly",
        "@daily",
        "@midnight",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
        "CRON_TZ=Europe/Paris 0 9 * * *",
        "TZ=America/New_York @daily",
        "0 +3 * * *",  # Go's Atoi takes a sign
    ],
)
def test_what_a_ping_source_accepts(cron: str) -> None:
    TaskSchedule.model_validate(schedule(schedule=cron))


@pytest.mark.parametrize(
    ("cron", "words"),
    [
        ("0 3 * * 7", "above 6"),  # robfig's days of week are 0-6
        ("0 3 L * *", "not a number"),
        ("0 3 15W * *", "not a number"),
        ("0 3 * * 5#3", "not a number"),
        ("0 3 * * 5L", "not a number"),
        ("@every 1h", "@every"),
        ("@reboot", "unknown descriptor"),
        ("0 0 3 * * *", "seconds field"),
        ("0 3 * *", "expected 5 fields"),
        ("60 * * * *", "above 59"),
        ("0 24 * * *", "above 23"),
        ("0 0 0 * *", "below 1"),
        ("0 0 * 13 *", "above 12"),
        ("5-1 * * * *", "backwards"),
        ("*/0 * * * *", "positive"),
        ("1-2-3 * * * *", "hyphens"),
        ("1/2/3 * * * *", "slashes"),
        ("1,,2 * * * *", "not a number"),
        ("0 3 * * * ", None),  # trailing space is fine: fields split on whitespace
        ("CRON_TZ=Mars/Olympus 0 3 * * *", "time zone"),
        ("CRON_TZ=UTC", "expected a schedule"),
        ("", "empty"),
    ],
)
def test_what_a_ping_source_refuses_names_the_field(tmp_path: Path, cron: str, words: str | None) -> None:
    if words is None:
        TaskSchedule.model_validate(schedule(schedule=cron))
        return
    failure = error(tmp_path, schedule(schedule=cron))
    assert failure.field == "spec.schedule"
    assert words in failure.message


def test_a_cron_tz_prefix_and_a_time_zone_cannot_both_be_set(tmp_path: Path) -> None:
    failure = error(tmp_path, schedule(schedule="CRON_TZ=Europe/Paris 0 9 * * *", timeZone="UTC"))
    assert failure.field == "spec.schedule" and "spec.timeZone" in failure.message


@pytest.mark.parametrize("data", [[1, 2], "text", 3, None])
def test_data_must_be_a_json_object(tmp_path: Path, data: Any) -> None:
    failure = error(tmp_path, schedule(data=data))
    assert failure.field == "spec.data"


def test_the_ping_source_reads_the_zone_apart(tmp_path: Path) -> None:
    objects = load(tmp_path, AGENT, schedule(schedule="CRON_TZ=Europe/Paris 0 9 * * mon-fri", data={"a": [1]}))
    (ping,) = [o for o in objects if o["kind"] == "PingSource"]
    assert ping["spec"]["schedule"] == "0 9 * * mon-fri"
    assert ping["spec"]["timezone"] == "Europe/Paris"
    assert ping["spec"]["data"] == '{"a":[1]}'
    plain = load(tmp_path, AGENT, schedule())
    assert next(o for o in plain if o["kind"] == "PingSource")["spec"]["timezone"] == "UTC"


def test_days_follow_robfig() -> None:
    # Both day fields restricted: either matches. One starting with '*': both must match.
    assert parse_cron("0 0 13 * 5").day_or
    assert not parse_cron("0 0 * * 5").day_or
    assert not parse_cron("0 0 */1 * 5").day_or
    assert parse_cron("0 0 */2 * 5").day_or, "a step above 1 makes '*' a restriction (robfig's star bit)"
    friday_13th = TaskSchedule.model_validate(schedule(schedule="0 0 13 * 5"))
    # 2026-02-13 is a Friday; the 6th is a Friday too: either field matching runs.
    assert next_run(friday_13th, datetime(2026, 2, 1, tzinfo=UTC)) == datetime(2026, 2, 6, tzinfo=UTC)
    odd_fridays = TaskSchedule.model_validate(schedule(schedule="0 0 */2 * 5"))
    assert next_run(odd_fridays, datetime(2026, 2, 1, tzinfo=UTC)) == datetime(2026, 2, 3, tzinfo=UTC)


def test_dev_runs_a_prefixed_schedule_in_its_zone() -> None:
    paris = TaskSchedule.model_validate(schedule(schedule="CRON_TZ=Europe/Paris 30 7 * * *"))
    assert next_run(paris, datetime(2026, 1, 10, 12, 0, tzinfo=UTC)) == datetime(2026, 1, 11, 6, 30, tzinfo=UTC)


def test_the_same_cloudevent_in_dev_as_in_a_cluster() -> None:
    headers, _ = schedule_request(TaskSchedule.model_validate(schedule()), datetime(2026, 1, 1, tzinfo=UTC))
    # What Knative Eventing's PingSource sends (pkg/adapter/mtping/runner.go makeEvent).
    assert SCHEDULE_EVENT_TYPE == "dev.knative.sources.ping"
    assert headers["ce-type"] == "dev.knative.sources.ping"
    assert headers["ce-source"] == "/apis/v1/namespaces/team/pingsources/nightly"
