"""The real ``clrk-shim``'s log with warm start, for tests that read its warm-start lines.

A shim with ``CLRK_WARM_START=true`` and one warm sandbox is started on the command given, read
until it is ready (and, when asked, until it answered one request), stopped with SIGTERM; what
it wrote on stderr (its logging) is returned whole.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path

import httpx

from tests.support.runtime import shim_process

__all__ = ["READY_AGENT", "warm_start_log"]

READY_AGENT = ("/bin/sh", "-c", 'echo ready >&"$CLRK_READY_FD"; exec cat')
"""An agent that says it is ready at once, then echoes its envelope."""


async def warm_start_log(*command: str, invoke: bool = False, root: Path | None = None) -> str:
    """The stderr of a real ``clrk-shim`` with warm start running ``command``, from its start
    until it stopped: once it served, and with ``invoke`` once it answered one request. ``root``:
    its temp root (the sandbox uid must traverse it), else one of its own, removed after."""
    own = root is None
    base = Path(tempfile.mkdtemp(prefix="clrk-test-")) if root is None else root
    base.chmod(0o711)
    argv = ("--sandbox", "plain", "--warm-pool", "1", "--", *command)
    try:
        async with shim_process(base, *argv, env={"CLRK_WARM_START": "true"}) as shim:
            assert shim.stderr is not None
            lines: list[str] = []
            found = None
            async with asyncio.timeout(60):
                while line := (await shim.stderr.readline()).decode():
                    lines.append(line)
                    if found := re.search(r"running on http://[\d.]+:(\d+)", line):
                        break
                assert found, "".join(lines)
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{found.group(1)}", timeout=30) as client:
                    # It listens at once; ready once its warm sandbox is (or warm start fell back).
                    while (await client.get("/readyz")).status_code != 200:
                        await asyncio.sleep(0.02)
                    if invoke:
                        await client.post("/", json={})
                shim.terminate()
                lines.append((await shim.stderr.read()).decode())
                assert await shim.wait() == 0, "".join(lines)
        return "".join(lines)
    finally:
        if own:
            shutil.rmtree(base, ignore_errors=True)
