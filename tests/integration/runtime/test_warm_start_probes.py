"""A real ``clrk-shim`` with warm start answers its liveness probe while its agents start.

A pod's kubelet probes ``/livez``; a shim that listened only once its warm-started agents were
ready would be restarted by that probe whenever an agent's start-up outlasts it (or, hung, never
reach its fallback). The agent here starts only once the test lets it (a gate file), so the probes
are read while its start-up is certainly under way, without timing.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.runtime import shim_port, shim_process

GATED = (
    "/bin/sh",
    "-c",
    'while [ ! -e "$GATE/open" ]; do sleep 0.02; done; echo ready >&"$CLRK_READY_FD"; exec cat',
)
"""Says it is ready once ``$GATE/open`` exists, then echoes its envelope."""


@pytest.fixture
def gate() -> Iterator[Path]:
    """A folder the sandbox uids can read (the gate file goes in it)."""
    folder = Path(tempfile.mkdtemp(prefix="clrk-gate-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


async def _poll(client: httpx.AsyncClient, path: str, status: int) -> httpx.Response:
    async with asyncio.timeout(30):
        while (response := await client.get(path)).status_code != status:
            await asyncio.sleep(0.05)
    return response


async def test_livez_answers_while_the_agents_start_and_readyz_once_they_are_ready(shim_root: Path, gate: Path) -> None:
    argv = ("--sandbox", "plain", "--warm-pool", "1", "--env", f"GATE={gate}", "--", *GATED)
    async with shim_process(shim_root, *argv, env={"CLRK_WARM_START": "true"}) as shim:
        port = await shim_port(shim)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert (await client.get("/livez")).status_code == 200
            starting = await client.get("/readyz")
            assert starting.status_code == 503, starting.text
            assert starting.json()["ready"] is False
            (gate / "open").touch()
            ready = await _poll(client, "/readyz", 200)
            assert ready.json()["ready"] is True
            answer = await client.post("/", json={"n": 1})
            assert answer.status_code == 200, answer.text
            assert b'"n": 1' in answer.content or b'"n":1' in answer.content
        shim.terminate()
        assert await shim.wait() == 0
