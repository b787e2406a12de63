"""Nothing is left behind: no processes, no directories, whatever the outcome."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from pathlib import Path

import pytest

from clrk_runtime.service.runtime import AgentRuntime
from tests.support.runtime import (
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


@pytest.mark.parametrize("kind", KINDS)
async def test_a_deadline_that_passes_while_the_sandbox_is_made(kind: str, shim_root: Path) -> None:
    """Deadlines of a few milliseconds end while a cold sandbox is still being made: the
    sandbox is closed once it exists (no process, pipe or directory left, and no unclosed-pipe
    warning, which pytest's filterwarnings=error would turn into a failure)."""
    import gc
    import warnings

    before = sandbox_processes()
    settings = settings_for(kind, shim_root, ["cat"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with AgentRuntime(settings) as runtime:
            statuses = set()
            for milliseconds in (1, 2, 3) * 5:
                response = await runtime.handle({"x-clrk-timeout-ms": str(milliseconds)}, b"{}")
                statuses.add(response.status)
            assert 504 in statuses
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert sandbox_processes() == before
    assert list(shim_root.iterdir()) == []


@pytest.mark.parametrize("kind", KINDS)
async def test_a_spawner_that_died_is_replaced(kind: str, shim_root: Path) -> None:
    """The spawner (which starts every sandbox) is killed: the next invocation gets a new one."""
    settings = settings_for(kind, shim_root, [agent("echo.sh")], warm_pool=1)
    async with AgentRuntime(settings) as runtime:
        spawner = runtime._spawner
        assert spawner is not None and spawner._process is not None
        os.kill(spawner._process.pid, signal.SIGKILL)
        while not spawner._gone:  # the shim notices when its socket closes
            await asyncio.sleep(0.01)
        responses = [await runtime.handle({}, b'{"n": 1}') for _ in range(3)]
    # The warm sandbox died with the old spawner: its invocation fails, cleanly; later ones work.
    assert [r.status for r in responses][1:] == [200, 200], [r.body for r in responses]
    assert responses[0].status in (200, 502)
    assert sandbox_processes() == []


@pytest.mark.parametrize("kind", KINDS)
async def test_two_runtimes_of_one_host_never_share_a_sandbox_uid(kind: str, shim_root: Path) -> None:
    """Two agents draw from the same uid range (as in one clrk dev): the one that ends first must
    not take the other's processes with it."""
    slow = settings_for(kind, shim_root, [agent("slow.sh"), "0.5"])
    quick = settings_for(kind, shim_root, [agent("echo.sh")])
    async with AgentRuntime(slow) as first, AgentRuntime(quick) as second:
        answers = await asyncio.gather(first.handle({}, b"{}"), *(second.handle({}, b"{}") for _ in range(3)))
    assert [a.status for a in answers] == [200] * 4, [a.body for a in answers]
    assert answers[0].body == b"finished\n"


@pytest.mark.parametrize("warm", [0, 1])
@pytest.mark.parametrize("kind", KINDS)
async def test_an_entrypoint_that_cannot_run_is_502_with_the_shells_code(
    kind: str, warm: int, shim_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Missing: 127; not executable: 126 (what a shell's exec answers), and the reason in the log."""
    caplog.set_level(logging.INFO, logger="clrk_runtime.agent")
    for command, code in (["/nonexistent/agent.sh"], 127), (["/etc/passwd"], 126):  # 0644: not a program
        settings = settings_for(kind, shim_root, command, warm_pool=warm)
        async with AgentRuntime(settings) as runtime:
            response = await runtime.handle({}, b"{}")
        assert response.status == 502, response.body
        assert f'"exitCode": {code}'.encode() in response.body
        assert command[0] in caplog.text
    assert sandbox_processes() == []


@pytest.mark.parametrize("kind", KINDS)
async def test_deadlines_that_pass_while_sandboxes_start_leave_nothing(kind: str, shim_root: Path) -> None:
    """1-3 ms deadlines, 30 at once: each a 504, and no process, pipe or directory left (an
    unclosed pipe or unreaped child would surface as a ResourceWarning, an error here)."""
    settings = settings_for(kind, shim_root, [agent("echo.sh")])
    async with AgentRuntime(settings) as runtime:
        answers = await asyncio.gather(
            *(runtime.handle({"x-clrk-timeout-ms": str(1 + n % 3)}, b"{}") for n in range(30))
        )
        assert {a.status for a in answers} <= {200, 504}, [a.body for a in answers]
        assert sandbox_dirs(runtime) == []
    gc.collect()
    assert sandbox_processes() == []
