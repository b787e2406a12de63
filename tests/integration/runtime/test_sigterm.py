"""The real ``clrk-shim`` process: SIGTERM drains in-flight invocations, cleans up, exits 0."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.runtime.conftest import SANDBOX_UID, agent


def _shim() -> str:
    found = Path(sys.executable).parent / "clrk-shim"
    if found.exists():
        return str(found)
    path = shutil.which("clrk-shim")
    if path is None:
        pytest.skip("clrk-shim is not installed")
    return path


async def _line_matching(stream: asyncio.StreamReader, pattern: str) -> re.Match[str]:
    async with asyncio.timeout(30):
        while line := (await stream.readline()).decode():
            if match := re.search(pattern, line):
                return match
    raise AssertionError(f"the shim never logged {pattern!r}")


async def test_sigterm_lets_the_in_flight_invocation_finish(shim_root: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "CLRK_TEMP_ROOT": str(shim_root),
        "CLRK_SANDBOX_UID": str(SANDBOX_UID),
        "CLRK_SANDBOX_GID": str(SANDBOX_UID),
    }
    shim = await asyncio.create_subprocess_exec(
        _shim(),
        "--port", "0",
        "--host", "127.0.0.1",
        "--warm-pool", "1",
        "--sandbox", "plain",
        "--", agent("slow.sh"), "1",
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert shim.stderr is not None
    try:
        port = (await _line_matching(shim.stderr, r"running on http://[\d.]+:(\d+)")).group(1)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            call = asyncio.create_task(client.post("/", json={}))
            await _line_matching(shim.stderr, r"clrk_runtime.agent \[.*\] started")
            shim.send_signal(signal.SIGTERM)
            response = await call
        assert (response.status_code, response.text) == (200, "finished\n")
        async with asyncio.timeout(30):
            assert await shim.wait() == 0
    finally:
        if shim.returncode is None:
            shim.kill()
            await shim.wait()
    assert list(shim_root.iterdir()) == []
