"""Durations as manifests and flags write them, and times as agents read them.

``spec.timeout: 1m30s`` and ``clrk-shim --timeout 100s`` share one parser; the longest timeout is
one constant, because the egress gateway forgets a revoked invocation that long after it began.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

__all__ = ["MAX_TIMEOUT_S", "parse_duration", "rfc3339"]

MAX_TIMEOUT_S = 3600.0
"""The longest an invocation may run (a TaskAgent's ``spec.timeout``, the shim's ``--timeout``):
an async one; a synchronous call is cut at
:data:`~clrk_runtime.protocol.invocations.MAX_SYNC_TIMEOUT_S` whatever its agent's timeout."""

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | float | int) -> float:
    """Seconds in ``value``: a number, or a Go-style duration such as ``100s``, ``1m30s``."""
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {value!r} (use e.g. 100s, 1m30s, 250ms)")
    return total


def rfc3339(moment: float) -> str:
    """Unix time as RFC 3339 UTC with milliseconds, e.g. ``2026-01-02T03:04:05.678Z``."""
    text = datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")
