from __future__ import annotations

import logging

from clrk.telemetry.redaction import SecretScrubber, header_attributes


def test_header_attributes_redact_credentials() -> None:
    attrs = header_attributes(
        [("X-Api-Key", "sk-1"), ("anthropic-version", "2023-06-01"), ("other", "x")],
        ["x-api-key", "anthropic-version"],
    )
    assert attrs == {
        "http.request.header.x-api-key": ["[redacted]"],
        "http.request.header.anthropic-version": ["2023-06-01"],
    }


def test_scrubber() -> None:
    record = logging.LogRecord("x", logging.INFO, "f", 1, "key=%s", ("sk-secret-1",), None)
    assert SecretScrubber(["sk-secret-1"]).filter(record)
    assert record.getMessage() == "key=[redacted]"
