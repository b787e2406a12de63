"""Fixtures for the shim's integration tests: real processes, real sockets on port 0."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from clrk_runtime.asgi import ShimApp
from clrk_runtime.backends import bwrap_works
from clrk_runtime.runtime import AgentRuntime
from clrk_runtime.settings import RuntimeSettings
from tests.support.processes import live_processes
from tests.support.readable import agents_dir
from tests.support.serving import uvicorn_serving

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


@pytest.fixture
def shim_root() -> Iterator[Path]:
    """A temp root the sandbox uid can traverse (pytest's tmp_path is 0700 root)."""
    root = Path(tempfile.mkdtemp(prefix="clrk-test-"))
    root.chmod(0o711)
    yield root
    leftovers = list(root.iterdir())
    shutil.rmtree(root, ignore_errors=True)
    assert leftovers == [], f"the shim left files behind: {leftovers}"


def sandbox_processes() -> list[int]:
    """Live (non-zombie) processes running as a sandbox uid."""
    return list(live_processes(SANDBOX_RANGE))


def sandbox_dirs(runtime: AgentRuntime) -> list[Path]:
    root = runtime._root
    assert root is not None
    return [p for p in root.iterdir() if p.is_dir()]


@asynccontextmanager
async def serving(settings: RuntimeSettings) -> AsyncIterator[tuple[httpx.AsyncClient, AgentRuntime]]:
    """The shim's real HTTP app under uvicorn on 127.0.0.1:0, and a client for it."""
    runtime = AgentRuntime(settings)
    config = uvicorn.Config(ShimApp(runtime), host="127.0.0.1", port=0, lifespan="on", log_level="warning")
    async with (
        uvicorn_serving(config) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
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
