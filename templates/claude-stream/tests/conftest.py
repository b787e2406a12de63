"""Run this agent's real entrypoint through the real clrk shim, as `clrk dev` and a cluster do.

The sandbox runs as an unprivileged user with a read-only view of the host, so the tests run a
world-readable copy of this folder, bound into the sandbox at the same path. ``tests/bin`` comes
first on the agent's PATH: its ``claude`` is a stand-in that answers without a key or a network.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clrk_runtime.testing import Result, invoke

ENTRYPOINT = "agent.sh"
FORK = Path(__file__).resolve().parents[1]
_SKIP = shutil.ignore_patterns(".git", ".venv", "node_modules", "__pycache__", ".pytest_cache")


@pytest.fixture(scope="session")
def fork_copy() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="clrk-agent-test-"))
    try:
        root.chmod(0o755)
        copy = root / "agent"
        shutil.copytree(FORK, copy, ignore=_SKIP)
        for path in [copy, *copy.rglob("*")]:
            path.chmod(path.stat().st_mode | (0o755 if path.is_dir() else 0o444))
        yield copy
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def agent(fork_copy: Path) -> Callable[..., Result]:
    """``agent(data, **settings)``: one invocation; ``settings`` are RuntimeSettings fields,
    e.g. ``agent_env={"NAME": "value"}`` for the manifest's env."""

    def call(data: Any, **settings: Any) -> Result:
        settings.setdefault("binds", [f"{fork_copy}:{fork_copy}"])
        settings.setdefault("agent_path", f"{fork_copy}/tests/bin:/usr/local/bin:/usr/bin:/bin")
        settings.setdefault("timeout", 30)
        return invoke([str(fork_copy / ENTRYPOINT)], data, **settings)

    return call
