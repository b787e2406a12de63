"""``AgentRuntime.watch_output``: every invocation's stdout, live, for a TUI."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from clrk_runtime.service.runtime import AgentRuntime
from tests.support.runtime import agent, settings_for


async def test_a_watcher_sees_each_invocations_output_and_its_end(
    shim_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, bytes]] = []

    def broken(invocation_id: str, chunk: bytes) -> None:
        raise RuntimeError("a watcher's bug")

    settings = settings_for("plain", shim_root, [agent("ticker.sh"), "3", "0.05"])
    async with AgentRuntime(settings) as runtime:
        runtime.watch_output(broken)
        stop = runtime.watch_output(lambda invocation_id, chunk: seen.append((invocation_id, chunk)))
        first = await runtime.handle({}, b"{}")
        stop()
        second = await runtime.handle({}, b"{}")
    assert first.status == second.status == 200, "a watcher's failure is not the run's"
    invocation_id = first.header("X-Clrk-Invocation-Id")
    assert {i for i, _ in seen} == {invocation_id}, "after stop(), nothing more"
    assert b"".join(chunk for _, chunk in seen) == first.body == b"tick 1\ntick 2\ntick 3\ndone\n"
    assert seen[-1] == (invocation_id, b""), "the end, once"
    assert [chunk for _, chunk in seen].count(b"") == 1
    assert len(seen) > 2, "chunks as they came, not the body at the end"
    assert "an output watcher failed" in caplog.text
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)
