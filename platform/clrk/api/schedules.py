"""TaskSchedule: invoke one TaskAgent on a cron schedule with fixed JSON data."""

from __future__ import annotations

from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import Field, field_validator

from clrk.api.common import Resource, Spec, is_dns_label

__all__ = ["TaskSchedule", "TaskScheduleSpec"]


class TaskScheduleSpec(Spec):
    agent: str
    """Name of the TaskAgent (same namespace) to invoke."""
    schedule: str
    """Five-field cron expression, e.g. ``*/5 * * * *``."""
    time_zone: str = Field("UTC", alias="timeZone")
    data: Any = Field(default_factory=dict, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    """The JSON the agent receives as the CloudEvent's ``data``."""

    @field_validator("agent")
    @classmethod
    def _agent_name(cls, value: str) -> str:
        if not is_dns_label(value):
            raise ValueError(f"expected a TaskAgent name, found {value!r}")
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"expected a five-field cron expression like '*/5 * * * *', found {value!r}")
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"expected an IANA time zone like 'Europe/Paris', found {value!r}") from None
        return value


class TaskSchedule(Resource):
    kind: Literal["TaskSchedule"] = "TaskSchedule"
    spec: TaskScheduleSpec
