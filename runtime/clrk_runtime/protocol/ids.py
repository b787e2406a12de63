"""Invocation ids: the platform mints them (UUIDv7: unique, and sortable by time).

An id names one invocation in the response header, the agent's environment and envelope, every
span and log line, and the agent's proxy credentials at the egress gateway. A caller's CloudEvent
keeps its own ``id``; whatever id comes from outside (an event's, or the one the ingress forwards
to the shim) must follow :data:`EVENT_ID_RULE`, so that it stays safe to log and to put in a URL.
"""

from __future__ import annotations

import re

from uuid6 import uuid7

__all__ = ["EVENT_ID_RULE", "given_or_new", "is_event_id", "new_invocation_id"]

EVENT_ID_RULE = "1-128 characters of letters, digits and '._:-', starting with a letter or digit"
_EVENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def new_invocation_id() -> str:
    """A fresh id: a UUIDv7 in its canonical text form."""
    return str(uuid7())


def is_event_id(value: str) -> bool:
    """Whether ``value`` follows :data:`EVENT_ID_RULE`."""
    return _EVENT_ID.fullmatch(value) is not None


def given_or_new(value: str | None) -> str:
    """``value`` when it is a well-formed id (the ingress's, forwarded to the shim), else a new one."""
    return value if value and is_event_id(value) else new_invocation_id()
