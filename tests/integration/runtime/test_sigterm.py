"""The real ``clrk-shim`` process: SIGTERM drains in-flight invocations, cleans up, exits 0; SIGKILL
leaves no sandbox running."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path

import httpx
import pytest

from clrk.manifests.compiling import SHIM_CAPABILITIES
from tests.support.runtime import KINDS, agent, line_matching, sandbox_processes, shim_process


async def test_sigterm_lets_the_in_flight_invocation_finish(shim_root: Path) -> None:
    async with shim_process(shim_root, "--warm-pool", "1", "--sandbox", "plain", "--", agent("slow.sh"), "1") as shim:
        assert shim.stderr is not None
        port = (await line_matching(shim.stderr, r"running on http://[\d.]+:(\d+)")).group(1)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            call = asyncio.create_task(client.post("/", json={}))
            await line_matching(shim.stderr, r"clrk_runtime.agent \[.*\] started")
            shim.send_signal(signal.SIGTERM)
            response = await call
        assert (response.status_code, response.text) == (200, "finished\n")
        async with asyncio.timeout(30):
            assert await shim.wait() == 0
    assert list(shim_root.iterdir()) == []


@pytest.mark.parametrize("kind", KINDS)
async def test_a_killed_shim_takes_its_sandboxes_with_it(kind: str, shim_root: Path) -> None:
    """SIGKILL leaves the shim no say: its spawner sees the socket close and kills every sandbox,
    the one running an invocation and (bubblewrap) the warm ones' stubs."""
    before = set(sandbox_processes())
    try:
        argv = ("--warm-pool", "2", "--sandbox", kind, "--", agent("slow.sh"), "30")
        async with shim_process(shim_root, *argv) as shim:
            assert shim.stderr is not None
            port = (await line_matching(shim.stderr, r"running on http://[\d.]+:(\d+)")).group(1)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                call = asyncio.create_task(client.post("/", json={}))
                await line_matching(shim.stderr, r"clrk_runtime.agent \[.*\] started")
                assert set(sandbox_processes()) - before, "the invoked sandbox's processes run"
                shim.kill()
                await shim.wait()
                with pytest.raises(httpx.TransportError):
                    await call
            async with asyncio.timeout(5):
                while set(sandbox_processes()) - before:
                    await asyncio.sleep(0.01)
    finally:
        # A killed shim cannot remove its temp root (in a pod it goes with the container).
        for leftover in shim_root.iterdir():
            shutil.rmtree(leftover)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
@pytest.mark.parametrize("kind", KINDS)
async def test_the_shim_needs_no_more_than_the_capabilities_its_pod_keeps(kind: str, shim_root: Path) -> None:
    """The compiled Knative Service drops every capability but a few: the real shim, run as root
    with only those (setpriv's bounding set), still answers with the agent's declared headers,
    drains on SIGTERM and removes every sandbox directory."""
    bounding = ",".join(["-all", *(f"+{name.lower()}" for name in SHIM_CAPABILITIES)])
    limited = ("setpriv", f"--bounding-set={bounding}", "--inh-caps=-all", "--")
    argv = ("--warm-pool", "1", "--sandbox", kind, "--", agent("headers.sh"))
    async with shim_process(shim_root, *argv, prefix=limited) as shim:
        assert shim.stderr is not None
        port = (await line_matching(shim.stderr, r"running on http://[\d.]+:(\d+)")).group(1)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            answers = [await client.post("/", json={"n": n}) for n in range(3)]
        for response in answers:
            assert (response.status_code, response.headers["content-type"]) == (201, "text/csv"), response.text
            assert response.text == "a,b\n1,2\n"
        shim.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await shim.wait() == 0
    assert list(shim_root.iterdir()) == []  # those capabilities were enough to remove every sandbox
    assert set(sandbox_processes()) == set()
