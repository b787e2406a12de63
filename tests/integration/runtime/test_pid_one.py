"""The shim as pid 1 of its own pid namespace, as in every container: cold plain sandboxes answer.

There the spawner is the only other process, so the sweep of a sandbox's uid (``kill(-1)``) can
find nobody at all to signal, which the kernel reports as ESRCH; that once killed the spawner and
turned every cold invocation in a pod into a 502."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import httpx
import pytest

from tests.support.runtime import agent, shim_port, shim_process

pytestmark = pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux's unshare is not installed")


async def test_cold_plain_sandboxes_answer_when_the_shim_is_pid_one(shim_root: Path) -> None:
    prefix = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child")
    async with shim_process(shim_root, "--sandbox", "plain", "--", agent("echo.sh"), prefix=prefix) as shim:
        port = await shim_port(shim)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            answers = [await client.post("/", json={"n": n}) for n in range(3)]
        # SIGTERM to the shim itself (unshare does not pass it on): it drains and cleans up.
        (pid,) = Path(f"/proc/{shim.pid}/task/{shim.pid}/children").read_text().split()
        os.kill(int(pid), signal.SIGTERM)
        assert await shim.wait() == 0
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    assert [a.json()["data"] for a in answers] == [{"n": 0}, {"n": 1}, {"n": 2}]
