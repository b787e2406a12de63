"""Pieces shared by every clrk resource: object metadata, durations, names.

Field names on the wire are Kubernetes' camelCase; Python attributes are snake_case.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
)
from pydantic.alias_generators import to_camel

from clrk_runtime.protocol.durations import parse_duration as parse_seconds

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "DNS_LABEL_RULE",
    "Duration",
    "ObjectMeta",
    "Resource",
    "Spec",
    "format_duration",
    "is_dns_label",
    "parse_duration",
]

API_GROUP = "clrk.dev"
API_VERSION = f"{API_GROUP}/v1alpha1"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_LABEL_RULE = (
    "at most 63 characters of lower-case letters, digits and '-', starting and ending with a letter or digit"
)


def is_dns_label(name: str) -> bool:
    """Whether ``name`` is a valid Kubernetes (RFC 1123) label, as object names must be here."""
    return len(name) <= 63 and bool(_DNS_LABEL.match(name))


def parse_duration(value: object) -> timedelta:
    """Parse a Go-style duration (``100s``, ``1m30s``, ``1.5h``, ``250ms``) or plain seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '100s' or '2m', found {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"expected a positive duration, found {value!r}")
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like '100s' or '2m', found {value!r}")
    try:
        seconds = parse_seconds(value)  # the shim's parser: one spelling of durations everywhere
    except ValueError:
        raise ValueError(f"expected a duration like '100s' or '2m', found {value!r}") from None
    if seconds < 0:
        raise ValueError(f"expected a positive duration, found {value!r}")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest Go-style spelling of ``value`` (``100s``, ``2m``, ``1h30m``, ``1.5s``), exact
    to the microsecond: a fraction of a second is written out in full (``100.000001s``), never
    rounded."""
    micros = value // timedelta(microseconds=1)
    whole, fraction = divmod(micros, 1_000_000)
    if fraction:
        return f"{whole}.{fraction:06d}".rstrip("0") + "s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts) or "0s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ms|h|m|s))+$|^[0-9]+$"}),
]
"""A duration written ``100s``/``2m``/``1h30m`` in manifests, a ``timedelta`` in Python."""


class Spec(BaseModel):
    """Base of every manifest-facing model: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class ObjectMeta(Spec):
    """The part of Kubernetes' ObjectMeta that clrk reads; other keys pass through untouched."""

    model_config = ConfigDict(extra="allow")

    name: str
    namespace: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("name", "namespace")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not is_dns_label(value):
            raise ValueError(f"expected {DNS_LABEL_RULE}, found {value!r}")
        return value


class Resource(Spec):
    """A clrk object: ``apiVersion``, ``kind``, ``metadata``; subclasses add ``spec``."""

    api_version: str = Field(API_VERSION, alias="apiVersion")
    kind: str
    metadata: ObjectMeta

    @property
    def ref(self) -> str:
        """``namespace/name``: how callers, proxies and logs name this object."""
        return f"{self.metadata.namespace}/{self.metadata.name}"
