"""TaskSchedule: invoke one TaskAgent on a cron schedule with fixed JSON data.

The schedule is the cron language of Knative Eventing's PingSource (robfig/cron, see
:mod:`clrk.api.cron`), five fields, and is checked here as the PingSource's webhook would check
it, so that ``clrk validate`` refuses what the cluster would. Every run is the same CloudEvent in
both modes: ``type`` :data:`SCHEDULE_EVENT_TYPE` (the type Knative gives every PingSource event;
a PingSource cannot change it) and ``source`` :func:`schedule_event_source`, with ``data`` the
schedule's JSON object.
"""

from __future__ import annotations

from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationInfo, field_validator

from clrk.api.common import Resource, Spec, is_dns_label
from clrk.api.cron import CronSchedule, parse_cron

__all__ = [
    "SCHEDULE_EVENT_TYPE",
    "SCHEDULE_ROUTE",
    "TaskSchedule",
    "TaskScheduleSpec",
    "schedule_event_source",
    "schedule_path",
]

SCHEDULE_EVENT_TYPE = "dev.knative.sources.ping"
"""The CloudEvent type of every scheduled run, in ``clrk dev`` as in a cluster."""
DEFAULT_TIME_ZONE = "UTC"
SCHEDULE_ROUTE = "/_clrk/schedules"
"""Where the ingress takes scheduled runs (:func:`schedule_path`): a PingSource cannot send a
header of its own, so its sink's URL names the agent and carries the credential."""


def schedule_event_source(namespace: str, name: str) -> str:
    """The CloudEvent source of a TaskSchedule's runs: the PingSource's own, as Knative sets it."""
    return f"/apis/v1/namespaces/{namespace}/pingsources/{name}"


def schedule_path(namespace: str, agent: str, token: str) -> str:
    """The ingress path a TaskSchedule's runs are posted to: ``token`` is
    :func:`clrk_runtime.protocol.keys.schedule_token` for that agent, which the ingress checks."""
    return f"{SCHEDULE_ROUTE}/{namespace}/{agent}/{token}"


def _check_zone(value: str, what: str) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"expected an IANA time zone like 'Europe/Paris' {what}, found {value!r}") from None


class TaskScheduleSpec(Spec):
    agent: str
    """Name of the TaskAgent (same namespace) to invoke."""
    time_zone: str | None = Field(None, alias="timeZone")
    """IANA time zone the schedule is read in (default UTC, or the schedule's ``CRON_TZ=``)."""
    schedule: str
    """Five-field cron expression (robfig/cron, as Knative's PingSource reads it), e.g.
    ``*/5 * * * *``, ``30 7 * * mon-fri``, ``@hourly``; optionally ``CRON_TZ=Zone `` first."""
    data: dict[str, Any] = Field(default_factory=dict, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    """The JSON object the agent receives as the CloudEvent's ``data``."""

    @field_validator("agent")
    @classmethod
    def _agent_name(cls, value: str) -> str:
        if not is_dns_label(value):
            raise ValueError(f"expected a TaskAgent name, found {value!r}")
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            _check_zone(value, "")
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str, info: ValidationInfo) -> str:
        try:
            parsed = parse_cron(value)
        except ValueError as exc:
            raise ValueError(f"{exc}; expected a cron expression like '*/5 * * * *', found {value!r}") from None
        if parsed.location is not None:
            if info.data.get("time_zone") is not None:
                # The PingSource would read "CRON_TZ=<timeZone> CRON_TZ=… …": one zone only.
                raise ValueError("a CRON_TZ= prefix and spec.timeZone cannot both be set: keep one")
            _check_zone(parsed.location or DEFAULT_TIME_ZONE, "in the CRON_TZ= prefix")
        return value

    @property
    def parsed(self) -> CronSchedule:
        return parse_cron(self.schedule)

    @property
    def zone(self) -> str:
        """The time zone the schedule runs in: ``timeZone``, else its ``CRON_TZ=``, else UTC."""
        return self.time_zone or self.parsed.location or DEFAULT_TIME_ZONE

    @property
    def cron(self) -> str:
        """The schedule without its ``CRON_TZ=`` prefix (what the PingSource's ``schedule`` gets)."""
        return self.parsed.cron


class TaskSchedule(Resource):
    kind: Literal["TaskSchedule"] = "TaskSchedule"
    spec: TaskScheduleSpec
