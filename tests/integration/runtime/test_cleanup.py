"""Nothing is left behind: no processes, no directories, whatever the outcome."""

from __future__ import annotations

from pathlib import Path

import pytest

from clrk_runtime.runtime import AgentRuntime
from tests.integration.runtime.conftest import (
    KINDS,
    agent,
    sandbox_dirs,
    sandbox_processes,
    settings_for,
)

OUTCOMES = [
    (["echo.sh"], {}, 200),
    (["fail.sh"], {}, 502),
    (["big.sh"], {"stdout_cap": 1000}, 502),
    (["stubborn.sh", "clrk-test-marker"], {"timeout": 0.5}, 504),
]


@pytest.mark.parametrize("kind", KINDS)
async def test_every_outcome_leaves_nothing_behind(kind: str, shim_root: Path) -> None:
    before = sandbox_processes()
    for command, fields, status in OUTCOMES:
        settings = settings_for(kind, shim_root, [agent(command[0]), *command[1:]], **fields)
        async with AgentRuntime(settings) as runtime:
            response = await runtime.handle({}, b"{}")
            assert response.status == status, response.body
            # Right after the answer, before the runtime stops: the sandbox is already gone.
            assert sandbox_dirs(runtime) == []
            assert sandbox_processes() == before, command
    assert list(shim_root.iterdir()) == []


@pytest.mark.parametrize("kind", KINDS)
async def test_deadline_kills_the_whole_tree(kind: str, shim_root: Path) -> None:
    """The agent ignores SIGTERM and double-forks a grandchild; all of it dies at the deadline."""
    marker = f"clrk-stubborn-{kind}"
    settings = settings_for(kind, shim_root, [agent("stubborn.sh"), marker], timeout=0.5)
    async with AgentRuntime(settings) as runtime:
        response = await runtime.handle({}, b"{}")
    assert response.status == 504
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if _mentions(p, marker)]


def _mentions(cmdline: Path, marker: str) -> bool:
    try:
        return marker.encode() in cmdline.read_bytes()
    except OSError:
        return False
