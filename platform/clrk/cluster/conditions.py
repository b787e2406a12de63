"""Conditions the operator derives from what an agent's pods logged (``SandboxConfined``,
``WarmStarted``): how a fresh reading becomes the stored condition.

Pods come and go, so a condition about them must not flap with them: with no pod running, the
last True/False stays (it describes the pods that last ran), and ``lastTransitionTime`` moves
only when the status does.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["kept", "settle"]


def settle(
    kind: str,
    fresh: tuple[str, str, str],
    stored: Iterable[Mapping[str, Any]],
    now: datetime.datetime | None = None,
) -> dict[str, str]:
    """The condition of type ``kind`` for ``fresh`` (``(status, reason, message)``) given the
    ``stored`` conditions: with no pod running (reason ``NoPods``), a stored True/False stays; the
    stored ``lastTransitionTime`` stays while the status does not change."""
    status, reason, message = fresh
    before = next((dict(c) for c in stored if c.get("type") == kind), None)
    if reason == "NoPods" and before is not None and before.get("status") in ("True", "False"):
        return {k: str(v) for k, v in before.items()}
    stamp = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    if before is not None and before.get("status") == status:
        stamp = str(before.get("lastTransitionTime") or stamp)
    return {"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": stamp}


def kept(kind: str, stored: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The stored condition of type ``kind``, for a status rewritten without reading pods."""
    return [dict(c) for c in stored if c.get("type") == kind]
