"""Compute resources of an agent's pod, in Kubernetes' shape (``requests``/``limits`` of quantities).

Quantities are parsed here (Kubernetes' grammar: ``500m``, ``1.5``, ``512Mi``, ``2G``, ``1e3``)
only to refuse what the API server would refuse: a malformed quantity, or a request above its
limit. A small parser rather than ``kubernetes.utils.parse_quantity``: importing the kubernetes
client costs ≈ 230 ms, and every command (``clrk validate``, ``clrk dev``) loads these models.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator

from clrk.api.common import Spec

__all__ = ["RESOURCE_NAMES", "AgentResources", "Quantity", "parse_quantity"]

RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")
_QUANTITY = re.compile(
    r"^\+?(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse_quantity(text: str) -> Decimal:
    """The value of a (non-negative) Kubernetes quantity; :class:`ValueError` when it is none."""
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"expected a quantity like '500m', '2', '512Mi' or '1G', found {text!r}")
    number, suffix = Decimal(match["number"]), str(match["suffix"] or "")
    if suffix in _BINARY:
        return number * Decimal(1024) ** _BINARY[suffix]
    exponent = _DECIMAL[suffix] if suffix in _DECIMAL else int(suffix[1:] or 0)
    return number * Decimal(10) ** exponent


def _quantity(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a quantity like '500m', '2' or '512Mi', found {value!r}")
    text = str(value)
    parse_quantity(text)
    return text


Quantity = Annotated[str, BeforeValidator(_quantity)]
"""A Kubernetes quantity, kept as written (``2`` becomes ``"2"``)."""


def _names(values: dict[str, str]) -> dict[str, str]:
    for name in values:
        if name not in RESOURCE_NAMES:
            raise ValueError(f"expected {', '.join(RESOURCE_NAMES)}, found {name!r}")
    return values


class AgentResources(Spec):
    """``requests`` and ``limits`` of the agent's container, as in a Kubernetes container spec.

    Given, they replace clrk's defaults as a whole (Kubernetes' own rule then applies: a resource
    with a limit and no request is requested at its limit)."""

    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)

    @field_validator("requests")
    @classmethod
    def _request_names(cls, values: dict[str, str]) -> dict[str, str]:
        return _names(values)

    @field_validator("limits")
    @classmethod
    def _limits_cover_requests(cls, values: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        _names(values)
        for name, request in (info.data.get("requests") or {}).items():
            if name in values and parse_quantity(request) > parse_quantity(values[name]):
                raise ValueError(
                    f"{name} limit {values[name]} is below its request {request}: "
                    "Kubernetes refuses a request above its limit"
                )
        return values

    def as_kubernetes(self) -> dict[str, dict[str, str]]:
        """The container's ``resources`` field."""
        return {key: dict(value) for key, value in (("requests", self.requests), ("limits", self.limits)) if value}
