"""Redaction of credentials in telemetry: headers become ``["[redacted]"]``, values never leave.

Shared by the egress gateway (span attributes, logs) and whoever else records headers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

__all__ = [
    "REDACTED",
    "SENSITIVE_HEADERS",
    "SecretScrubber",
    "header_attributes",
]

REDACTED = "[redacted]"

SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "cookie", "set-cookie"})


def header_attributes(headers: Iterable[tuple[str, str]], names: Iterable[str]) -> dict[str, list[str]]:
    """``http.request.header.<name>`` attributes for the ``names`` present in ``headers``.

    Sensitive headers are recorded only as ``["[redacted]"]``: presence, never the value.
    """
    wanted = {n.lower() for n in names}
    found: dict[str, list[str]] = {}
    for name, value in headers:
        key = name.lower()
        if key in wanted:
            found.setdefault(key, []).append(REDACTED if key in SENSITIVE_HEADERS else value)
    return {f"http.request.header.{k}": v for k, v in found.items()}


class SecretScrubber(logging.Filter):
    """A logging filter that replaces known secret values in records (defence in depth)."""

    def __init__(self, values: Iterable[str]) -> None:
        super().__init__()
        self._values = [v for v in values if len(v) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._values:
            return True
        message = record.getMessage()
        scrubbed = message
        for value in self._values:
            scrubbed = scrubbed.replace(value, REDACTED)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True
