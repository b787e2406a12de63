"""Helpers for tests of the runtime shim: real processes, real sockets on port 0.

Sandboxes run as uids of a range nothing else uses, so counting their processes counts only ours.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from clrk_runtime.sandbox.backends import bwrap_works
from clrk_runtime.server.app import ShimApp
from clrk_runtime.service.runtime import AgentRuntime
from clrk_runtime.settings import RuntimeSettings
from tests.support.processes import live_processes
from tests.support.readable import agents_dir
from tests.support.serving import uvicorn_serving

__all__ = [
    "AGENTS",
    "HAS_BWRAP",
    "KINDS",
    "SANDBOX_RANGE",
    "SANDBOX_UID",
    "SANDBOX_UIDS",
    "agent",
    "line_matching",
    "sandbox_dirs",
    "sandbox_processes",
    "serving",
    "settings_for",
    "shim_command",
    "shim_port",
    "shim_process",
]

AGENTS = agents_dir()
SANDBOX_UID = 50000
SANDBOX_UIDS = 256
SANDBOX_RANGE = range(SANDBOX_UID, SANDBOX_UID + SANDBOX_UIDS)
"""Otherwise unused uids for the sandboxes, so that counting their processes counts only ours."""
HAS_BWRAP = bwrap_works(SANDBOX_UID, SANDBOX_UID, os.geteuid() == 0)
KINDS = [
    "plain",
    pytest.param("bwrap", marks=pytest.mark.skipif(not HAS_BWRAP, reason="bwrap does not work")),
]


def shim_command() -> str:
    """The installed ``clrk-shim`` (next to this interpreter, else on PATH); skips without it."""
    found = Path(sys.executable).parent / "clrk-shim"
    if found.exists():
        return str(found)
    path = shutil.which("clrk-shim")
    if path is None:
        pytest.skip("clrk-shim is not installed")
    return path


def agent(name: str) -> str:
    return str(AGENTS / name)


def sandbox_processes() -> list[int]:
    """Live (non-zombie) processes running as a sandbox uid."""
    return list(live_processes(SANDBOX_RANGE))


def sandbox_dirs(runtime: AgentRuntime) -> list[Path]:
    root = runtime._root
    assert root is not None
    return [p for p in root.iterdir() if p.is_dir()]


@asynccontextmanager
async def serving(
    settings: RuntimeSettings, *, ready: bool = True
) -> AsyncIterator[tuple[httpx.AsyncClient, AgentRuntime]]:
    """The shim's real HTTP app under uvicorn on 127.0.0.1:0, and a client for it; with ``ready``,
    once ``/readyz`` says its warm pool is full (the server listens before: Knative routes to a
    pod only once it is ready)."""
    runtime = AgentRuntime(settings)
    config = uvicorn.Config(ShimApp(runtime), host="127.0.0.1", port=0, lifespan="on", log_level="warning")
    async with (
        uvicorn_serving(config) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        if ready:
            async with asyncio.timeout(60):
                while (await client.get("/readyz")).status_code != 200:
                    await asyncio.sleep(0.02)
        yield client, runtime


def settings_for(kind: str, root: Path, command: list[str], **fields: Any) -> RuntimeSettings:
    return RuntimeSettings(
        command=command,
        sandbox=kind,  # type: ignore[arg-type]
        temp_root=root,
        agent="team/bot",
        sandbox_uid=SANDBOX_UID,
        sandbox_uids=SANDBOX_UIDS,
        **fields,
    )


async def line_matching(stream: asyncio.StreamReader, pattern: str, within: float = 30) -> re.Match[str]:
    """The first line of ``stream`` that matches ``pattern`` (within ``within`` seconds)."""
    async with asyncio.timeout(within):
        while line := (await stream.readline()).decode():
            if match := re.search(pattern, line):
                return match
    raise AssertionError(f"the shim never logged {pattern!r}")


@asynccontextmanager
async def shim_process(
    root: Path,
    *argv: str,
    prefix: tuple[str, ...] = (),
    executable: str | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A real ``clrk-shim`` process with ``argv`` on 127.0.0.1:0, its temp root and uid range the
    tests'; killed if the test leaves it running. Its stderr is piped (the port is logged there)."""
    shim_env = {
        "PATH": os.environ["PATH"],
        "CLRK_TEMP_ROOT": str(root),
        "CLRK_SANDBOX_UID": str(SANDBOX_UID),
        "CLRK_SANDBOX_UIDS": str(SANDBOX_UIDS),
        **(env or {}),
    }
    shim = await asyncio.create_subprocess_exec(
        *prefix,
        executable or shim_command(),
        "--port",
        "0",
        "--host",
        "127.0.0.1",
        *argv,
        env=shim_env,
        stderr=asyncio.subprocess.PIPE,
    )
    assert shim.stderr is not None
    try:
        yield shim
    finally:
        if shim.returncode is None:
            shim.kill()
            await shim.wait()


async def shim_port(shim: asyncio.subprocess.Process) -> int:
    """The port a ``clrk-shim`` started by :func:`shim_process` listens on (from its log)."""
    assert shim.stderr is not None
    return int((await line_matching(shim.stderr, r"running on http://[\d.]+:(\d+)")).group(1))
