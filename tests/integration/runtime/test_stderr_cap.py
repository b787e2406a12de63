"""An agent's stderr is logged up to ``stderr_log_cap`` bytes per invocation, then one line says how
many bytes were dropped; the invocation span's tail still holds the last of it (both kinds)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clrk_runtime.service.runtime import AgentRuntime
from tests.support.runtime import KINDS, settings_for

FLOOD = (
    'cat >/dev/null; i=0; while [ $i -lt 500 ]; do echo "line $i $(printf %0200d 0)" >&2; i=$((i + 1)); done; echo ok'
)
"""500 stderr lines of about 210 bytes (105 KB), then the answer."""


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stderr_flood_is_capped_in_the_log_and_kept_in_the_tail(
    kind: str, shim_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clrk_runtime.agent")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = settings_for(kind, shim_root, ["sh", "-c", FLOOD], stderr_log_cap=10_000, stderr_tail=300)
    async with AgentRuntime(settings, tracer_provider=provider) as runtime:
        response = await runtime.handle({"x-clrk-invocation-id": "flood-1"}, b"{}")
    assert response.status == 200 and response.body == b"ok\n"
    tag = f"[{response.header('x-clrk-invocation-id')}]"
    lines = [r.getMessage() for r in caplog.records if r.name == "clrk_runtime.agent" and tag in r.getMessage()]
    logged = [line for line in lines if " line " in line]
    assert 40 <= len(logged) <= 48, "about 10 000 bytes of whole lines (at most the cap)"
    assert logged[0].endswith("line 0 " + "0" * 200) and logged[-1].split()[2] == str(len(logged) - 1)
    size = len(f"line 0 {'0' * 200}\n")
    total = sum(len(f"line {i} {'0' * 200}\n") for i in range(500))
    logged_bytes = sum(len(f"line {i} {'0' * 200}\n") for i in range(len(logged)))
    assert logged_bytes <= 10_000 < logged_bytes + size + 3
    assert lines[-1].endswith(
        f"stderr: {total - logged_bytes} bytes dropped from the log past its cap of 10000 bytes (CLRK_STDERR_LOG_CAP)"
    )
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "clrk.invocation"]
    assert span.attributes is not None
    assert str(span.attributes["clrk.stderr_tail"]).endswith(f"line 499 {'0' * 200}\n")
