"""Plain sandboxes share nothing and leave nothing in the places every uid can write (/tmp, /var/tmp,
/dev/shm): what a sandbox's uid made there is removed as that uid when it closes, before the uid
serves another sandbox, without following any symlink it planted, and off the event loop.

Root only: without a uid of its own a sandbox's files cannot be told from the shim's. Under
Landlock a plain sandbox cannot write these places at all (test_plain_confinement.py): these
tests run without it (``landlock_abi`` 0), as on a kernel that lacks it, where the cleaning is
what keeps sandboxes apart."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clrk_runtime.service.runtime import AgentRuntime
from tests.support.runtime import (
    SANDBOX_UID,
    SANDBOX_UIDS,
    agent,
    sandbox_dirs,
    sandbox_processes,
    settings_for,
    shim_port,
    shim_process,
)

JQ_BOT = Path(__file__).resolve().parents[3] / "examples" / "jq-bot" / "agent.sh"
FAKE_CLAUDE = """#!/bin/sh
# Answers jq-bot with the filter in $FAKE_FILTER: the result event of the CLI's stream-json
# output, once its input (jq-bot's one message) has ended.
cat >/dev/null
jq -cn --arg filter "$FAKE_FILTER" '{type: "result", is_error: false, result: "", structured_output: {filter: $filter}}'
"""

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes get uids of their own only under root")

PLACES = ("/tmp", "/var/tmp", "/dev/shm")
WITHOUT_LANDLOCK = {"CLRK_LANDLOCK_ABI": "0"}


@pytest.fixture(autouse=True)
def without_landlock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every shim here (the in-process ones read it from the environment) as on a kernel
    without Landlock."""
    for name, value in WITHOUT_LANDLOCK.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def mark() -> Iterator[str]:
    """A name prefix no one else uses; whatever a failing test left under it is removed."""
    prefix = f"clrk-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    for place in PLACES:
        for leftover in Path(place).glob(f"{prefix}*"):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _ours(mark: str) -> list[str]:
    return sorted(str(path) for place in PLACES for path in Path(place).glob(f"{mark}*"))


@pytest.mark.parametrize("warm", [0, 1])
async def test_a_scratch_file_in_tmp_does_not_outlive_its_invocation(warm: int, shim_root: Path, mark: str) -> None:
    """The real clrk-shim, plain sandboxes: an agent that writes a fixed /tmp path (as jq-bot did,
    noclobber here) answers every time, not only the first (it was 200, 502, 502)."""
    scratch = f"/tmp/{mark}-scratch"
    argv = ("--sandbox", "plain", "--warm-pool", str(warm), "--", agent("scratch.sh"), scratch)
    async with shim_process(shim_root, *argv, env=WITHOUT_LANDLOCK) as shim:
        port = await shim_port(shim)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            answers = [await client.post("/", json={"n": n}) for n in range(3)]
            assert not os.path.lexists(scratch), "gone once the answer is out"
        shim.terminate()
        assert await shim.wait() == 0
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    assert [a.json()["data"] for a in answers] == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_what_a_sandbox_writes_is_its_own(shim_root: Path) -> None:
    """umask 077: a file a sandbox leaves in /tmp while it runs is no other sandbox's to read."""
    async with AgentRuntime(settings_for("plain", shim_root, ["sh", "-c", "umask"])) as runtime:
        response = await runtime.handle({}, b"{}")
    assert (response.status, response.body) == (200, b"0077\n")


@pytest.mark.skipif(shutil.which("jq") is None or shutil.which("bash") is None, reason="jq-bot needs jq and bash")
async def test_the_jq_bot_example_answers_every_time_in_one_plain_shim(
    shim_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """examples/jq-bot/agent.sh with a stand-in ``claude``: each invocation answers with its own
    result (it was 200, 502, 502); a bad filter fails with jq's own complaint each time."""
    caplog.set_level(logging.INFO, logger="clrk_runtime.agent")
    tools = Path(tempfile.mkdtemp(prefix="clrk-fake-claude-"))
    try:
        tools.chmod(0o755)
        (tools / "claude").write_text(FAKE_CLAUDE)
        (tools / "claude").chmod(0o755)
        # A copy the sandbox's uid can reach wherever the checkout lies (a 0700 mktemp folder).
        agent_sh = tools / "agent.sh"
        shutil.copyfile(JQ_BOT, agent_sh)
        agent_sh.chmod(0o755)
        body = b'{"data": {"input": [{"n": 1}, {"n": 2}], "want": "the n of each"}}'
        headers = {"content-type": "application/cloudevents+json"}
        results = {}
        for name, jq_filter in (("good", "map(.n)"), ("bad", "map(.n")):
            settings = settings_for(
                "plain",
                shim_root,
                [str(agent_sh)],
                agent_path=f"{tools}:/usr/local/bin:/usr/bin:/bin",
                agent_env={"FAKE_FILTER": jq_filter},
            )
            async with AgentRuntime(settings) as runtime:
                results[name] = [await runtime.handle(headers, _event(body)) for _ in range(3)]
    finally:
        shutil.rmtree(tools)
    good, bad = results["good"], results["bad"]
    assert [(r.status, r.body) for r in good] == [(200, b'{"filter":"map(.n)","output":[1,2]}\n')] * 3
    assert [r.status for r in bad] == [502] * 3
    for response in bad:
        (invocation,) = [value for name, value in response.headers if name == "X-Clrk-Invocation-Id"]
        said = [r.getMessage() for r in caplog.records if invocation in r.getMessage()]
        assert any("does not run: jq: error: syntax error" in line for line in said), said
        assert not any("Permission denied" in line for line in said), said


def _event(body: bytes) -> bytes:
    """A structured CloudEvent around ``body``'s data (jq-bot reads ``.data``)."""
    data = json.loads(body)["data"]
    event = {"specversion": "1.0", "id": uuid.uuid4().hex, "source": "/test", "type": "t", "data": data}
    return json.dumps(event).encode()


async def test_what_an_invocation_leaves_in_shared_places_is_gone_after_it(shim_root: Path, mark: str) -> None:
    """Files, trees, a folder made 000, a fifo, a symlink, in each of /tmp, /var/tmp, /dev/shm;
    and a HOME with a 000 folder: all gone right after the answer, and the uid is free again."""
    before = sandbox_processes()
    async with AgentRuntime(settings_for("plain", shim_root, [agent("litter.sh"), mark])) as runtime:
        for _ in range(2):  # the second reuses nothing of the first
            response = await runtime.handle({}, b"{}")
            assert (response.status, response.body) == (200, b"left\n")
            assert _ours(mark) == []
            assert sandbox_dirs(runtime) == []
        assert runtime._ids is not None and runtime._ids._held == {}, "every uid was given back"
    assert sandbox_processes() == before


async def test_a_symlink_an_agent_planted_is_removed_not_followed(shim_root: Path, mark: str) -> None:
    """Links to a root-owned folder and file, in /tmp, in TMPDIR and the work dir, and in place of
    the agent's own HOME: the links go, what they point at stays."""
    victim = Path(tempfile.mkdtemp(prefix="clrk-victim-"))
    try:
        (victim / "keep").write_text("root's")
        settings = settings_for("plain", shim_root, [agent("plant.sh"), str(victim), mark])
        async with AgentRuntime(settings) as runtime:
            response = await runtime.handle({}, b"{}")
            left, dirs = _ours(mark), sandbox_dirs(runtime)
        assert (response.status, response.body) == (200, b"planted\n")
        assert sorted(p.name for p in victim.iterdir()) == ["keep"], "what the links point at stays"
        assert (victim / "keep").read_text() == "root's"
        assert (left, dirs) == ([], []), "the links go"
    finally:
        shutil.rmtree(victim)


@pytest.mark.timeout(180)
async def test_removing_many_files_stalls_no_other_invocation(shim_root: Path, mark: str) -> None:
    """One invocation leaves 20 000 files in /tmp and as many in HOME: while they are removed the
    shim's loop stays responsive and other invocations answer at their usual pace."""
    litter = settings_for("plain", shim_root, [agent("litter.sh"), mark, "20000"])
    quick = settings_for("plain", shim_root, [agent("echo.sh")])
    async with AgentRuntime(litter) as littering, AgentRuntime(quick) as answering:
        lags: list[float] = []
        slowest: list[float] = []

        async def sample() -> None:
            while True:
                start = time.monotonic()
                await asyncio.sleep(0.005)
                lags.append(time.monotonic() - start - 0.005)

        async def others() -> None:
            while True:
                start = time.monotonic()
                response = await answering.handle({}, b"{}")
                assert response.status == 200, response.body
                slowest.append(time.monotonic() - start)

        background = [asyncio.create_task(sample()), asyncio.create_task(others())]
        try:
            started = time.monotonic()
            response = await littering.handle({}, b"{}")
            took = time.monotonic() - started
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
        assert (response.status, response.body) == (200, b"left\n")
        assert _ours(mark) == []
        assert sandbox_dirs(littering) == []
    assert len(slowest) > 5, f"other invocations kept being answered during the {took:.1f} s"
    assert max(lags) < 0.25, f"the event loop stalled {max(lags):.3f} s"
    assert max(slowest) < 2.0, f"an invocation took {max(slowest):.3f} s"


async def test_what_a_killed_shim_left_is_cleaned_at_start(shim_root: Path, mark: str) -> None:
    """Files of a range uid in /tmp and /dev/shm with nothing running as it (a shim killed before
    it cleaned up; /dev/shm outlives a container's restart): removed at start, the uid used again.
    Those of a uid a process runs as (not a sandbox: someone else's) are left, the uid unused."""
    dead, alive = SANDBOX_UID + SANDBOX_UIDS - 2, SANDBOX_UID + SANDBOX_UIDS - 1
    for place, uid, name in (("/tmp", dead, "dead"), ("/dev/shm", dead, "dead"), ("/tmp", alive, "alive")):
        path = Path(place) / f"{mark}-{name}"
        (path / "inner").mkdir(parents=True)
        (path / "inner" / "file").write_text("left")
        for each in (path, path / "inner", path / "inner" / "file"):
            os.lchown(each, uid, uid)
    living = subprocess.Popen(["sleep", "60"], user=alive, group=alive, extra_groups=[])
    try:
        async with AgentRuntime(settings_for("plain", shim_root, [agent("echo.sh")])) as runtime:
            assert _ours(mark) == [f"/tmp/{mark}-alive"]
            assert runtime._ids is not None
            assert dead not in runtime._ids._held and alive in runtime._ids._held, "the live one is set aside"
    finally:
        living.kill()
        living.wait()
