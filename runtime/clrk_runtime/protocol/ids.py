"""Invocation ids: the platform mints them (UUIDv7: unique, and sortable by time), never a caller.

An invocation id names one invocation in the response header, the agent's environment and
envelope, every span and log line, and the agent's proxy credentials at the egress gateway (where
revoking it ends them). It is minted by the ingress, or by the shim when called directly; the
only id a shim takes from a request is the one in a request the ingress signed
(:mod:`clrk_runtime.protocol.signing`). A caller's CloudEvent keeps its own ``id`` in the
envelope (at-least-once delivery sends the same one again, and another caller may pick any id):
it travels to the agent and into the ingress's span, and keys nothing. That id must follow
:data:`EVENT_ID_RULE`, so that it stays safe to log.
"""

from __future__ import annotations

import re

from uuid6 import uuid7

__all__ = ["EVENT_ID_RULE", "is_event_id", "is_invocation_id", "new_invocation_id"]

EVENT_ID_RULE = "1-128 characters of letters, digits and '._:-', starting with a letter or digit"
_EVENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_INVOCATION_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def new_invocation_id() -> str:
    """A fresh id: a UUIDv7 in its canonical text form."""
    return str(uuid7())


def is_invocation_id(value: str) -> bool:
    """Whether ``value`` is what :func:`new_invocation_id` makes (a UUIDv7, canonical text form):
    it fits in a proxy URL's user name, a header and a log line as it is."""
    return _INVOCATION_ID.fullmatch(value) is not None


def is_event_id(value: str) -> bool:
    """Whether ``value`` follows :data:`EVENT_ID_RULE` (a caller's CloudEvent ``id``)."""
    return _EVENT_ID.fullmatch(value) is not None
