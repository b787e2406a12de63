"""examples/jq-bot/agent.sh as a process, with the real Claude CLI against the local TLS fake of
the Anthropic API: warm started (``$CLRK_READY_FD`` names a pipe; the envelope is written only once
a line came on it) and not (the envelope already waiting on stdin).

The shim's side of warm start is tested with the runtime; here is the agent's side: it starts the
CLI, says it is ready before it reads its request, lets go of the readiness pipe (the CLI holds no
copy), and answers the guide's request byte for byte either way; bad input and a CLI that dies
are answered with jq-bot's error object and exit 1.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clrk_runtime.protocol.envelope import build_envelope, stamp
from clrk_runtime.protocol.ids import new_invocation_id
from tests.support.fake_anthropic import Behaviour, FakeAnthropic
from tests.support.jq_bot import GUIDE_ANSWER, GUIDE_BODY, JQ_FILTER, REPO
from tests.support.threaded import in_thread
from tests.support.tlsca import TestCA

AGENT = REPO / "examples" / "jq-bot" / "agent.sh"
CLAUDE = Path(sys.executable).parent / "claude"
WAIT = 60.0
"""Seconds any one step may take before the test fails (a hang, not a slow machine)."""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CLAUDE.exists(), reason="no claude CLI in the venv"),
    pytest.mark.skipif(shutil.which("jq") is None or shutil.which("bash") is None, reason="jq-bot needs jq and bash"),
]


@dataclass
class Upstream:
    fake: FakeAnthropic
    ca: Path


@dataclass
class Ran:
    ready: bytes | None
    """What came on the readiness pipe before the envelope was written (None: no pipe given)."""
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    root = Path(tempfile.mkdtemp(prefix="clrk-jq-bot-script-"))
    try:
        ca = TestCA.create(root / "ca")
        with in_thread(FakeAnthropic(ca.issue(["api.anthropic.com", "127.0.0.1"]))) as fake:
            yield Upstream(fake, ca.cert_path)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fake(upstream: Upstream) -> FakeAnthropic:
    """The fake answering the guide's filter, its record of requests emptied first."""
    upstream.fake.requests.clear()
    upstream.fake.behaviour = Behaviour(structured_output={"filter": JQ_FILTER})
    return upstream.fake


def _env(upstream: Upstream, tmp_path: Path, bin_first: Path | None = None) -> dict[str, str]:
    """What jq-bot's pod gives it (hack/bench_jq_bot.py's ``_cli_env``): fresh HOME and TMPDIR,
    the manifest's env, the fake as the API over verified TLS; the venv's claude first on PATH."""
    (tmp_path / "home").mkdir()
    (tmp_path / "tmp").mkdir()
    path = [str(CLAUDE.parent), os.environ.get("PATH", os.defpath)]
    if bin_first is not None:
        path.insert(0, str(bin_first))
    return {
        "PATH": os.pathsep.join(path),
        "HOME": str(tmp_path / "home"),
        "TMPDIR": str(tmp_path / "tmp"),
        "ANTHROPIC_API_KEY": "clrk-injected-by-proxy",
        "ANTHROPIC_BASE_URL": f"https://127.0.0.1:{upstream.fake.port}",
        "NODE_EXTRA_CA_CERTS": str(upstream.ca),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "JQ_BOT_MODEL": "claude-haiku-4-5",
    }


def _envelope(body: str) -> bytes:
    """What the shim writes to stdin for a POST of ``body``: the envelope, with its deadline."""
    built = build_envelope(
        {"content-type": "application/json"}, body.encode(), invocation_id=new_invocation_id(), source="/test"
    )
    return stamp(built.body, deadline="2030-01-02T03:04:05.678Z", traceparent="")


def _read_line(fd: int) -> bytes:
    """One line from ``fd`` (or what came before its end of file); fails after WAIT seconds."""
    got = b""
    while not got.endswith(b"\n"):
        readable, _, _ = select.select([fd], [], [], WAIT)
        assert readable, f"nothing more on the readiness pipe within {WAIT}s (got {got!r})"
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        got += chunk
    return got


def run(body: str, env: dict[str, str], *, warm: bool) -> Ran:
    """Run agent.sh; warm: as warm start runs it (write the envelope only after its ready line,
    and after every copy of the pipe's write end is closed)."""
    ready: bytes | None = None
    read_end, write_end = os.pipe() if warm else (-1, -1)
    if warm:
        env = {**env, "CLRK_READY_FD": str(write_end)}
    process = subprocess.Popen(
        [str(AGENT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        cwd=env["TMPDIR"], pass_fds=(write_end,) if warm else (),
    )  # fmt: skip
    try:
        if warm:
            os.close(write_end)
            ready = _read_line(read_end)
            if ready:
                assert _read_line(read_end) == b"", "the pipe is let go once ready (no process holds it)"
        out, err = process.communicate(_envelope(body), timeout=WAIT)
    finally:
        if warm:
            os.close(read_end)
        if process.poll() is None:
            process.kill()
            process.communicate()
    return Ran(ready, process.returncode, out.decode(), err.decode())


@pytest.mark.parametrize("warm", [True, False], ids=["warm-start", "started-on-request"])
def test_the_guides_request_gives_the_guides_answer(
    warm: bool, upstream: Upstream, fake: FakeAnthropic, tmp_path: Path
) -> None:
    ran = run(GUIDE_BODY, _env(upstream, tmp_path), warm=warm)
    assert (ran.exit_code, ran.stdout) == (0, GUIDE_ANSWER + "\n"), ran.stderr
    if warm:
        assert ran.ready is not None and ran.ready.endswith(b"\n"), "one line said it was ready"
    (call,) = fake.messages_requests()
    prompt = call.json()["messages"][-1]["content"]
    text = prompt if isinstance(prompt, str) else "".join(part.get("text", "") for part in prompt)
    data = json.loads(GUIDE_BODY)
    assert f"Input:\n{json.dumps(data['input'], separators=(',', ':'))}\n\nWanted output: {data['want']}" in text


@pytest.mark.parametrize("warm", [True, False], ids=["warm-start", "started-on-request"])
def test_a_body_without_want_is_refused_without_a_model_call(
    warm: bool, upstream: Upstream, fake: FakeAnthropic, tmp_path: Path
) -> None:
    ran = run('{"input": [1, 2]}', _env(upstream, tmp_path), warm=warm)
    assert ran.exit_code == 1
    assert json.loads(ran.stdout) == {
        "error": {"type": "bad_input", "message": 'the body needs "want": a string saying what to extract'}
    }
    assert 'jq-bot: the body needs "want"' in ran.stderr
    assert fake.messages_requests() == []


def test_a_body_that_is_not_an_object_is_refused(upstream: Upstream, fake: FakeAnthropic, tmp_path: Path) -> None:
    ran = run('["not", "an", "object"]', _env(upstream, tmp_path), warm=True)
    assert ran.exit_code == 1
    assert json.loads(ran.stdout)["error"]["type"] == "bad_input"


def test_a_filter_that_does_not_run_is_a_filter_error(upstream: Upstream, fake: FakeAnthropic, tmp_path: Path) -> None:
    fake.behaviour.structured_output = {"filter": "map(.n"}
    ran = run('{"input": [{"n": 1}], "want": "the n of each"}', _env(upstream, tmp_path), warm=True)
    assert ran.exit_code == 1
    error = json.loads(ran.stdout)["error"]
    assert error["type"] == "filter_error"
    assert error["message"].startswith("the filter map(.n does not run: jq: error: syntax error")


def test_several_outputs_are_an_array_of_them(upstream: Upstream, fake: FakeAnthropic, tmp_path: Path) -> None:
    fake.behaviour.structured_output = {"filter": ".[] | .n"}
    ran = run('{"input": [{"n": 1}, {"n": "a\\nb"}], "want": "each n"}', _env(upstream, tmp_path), warm=False)
    assert (ran.exit_code, json.loads(ran.stdout)) == (0, {"filter": ".[] | .n", "output": [1, "a\nb"]}), ran.stderr


@pytest.mark.parametrize("warm", [True, False], ids=["warm-start", "started-on-request"])
def test_an_api_error_is_a_model_error(warm: bool, upstream: Upstream, fake: FakeAnthropic, tmp_path: Path) -> None:
    fake.behaviour.status = 400
    ran = run(GUIDE_BODY, _env(upstream, tmp_path), warm=warm)
    assert ran.exit_code == 1
    error = json.loads(ran.stdout)["error"]
    assert error["type"] == "model_error"
    assert error["message"].startswith("claude reported an error: "), error


@pytest.mark.parametrize("warm", [True, False], ids=["warm-start", "started-on-request"])
def test_a_cli_that_dies_at_start_is_a_model_error_naming_its_status(
    warm: bool, upstream: Upstream, tmp_path: Path
) -> None:
    dead = tmp_path / "bin"
    dead.mkdir()
    (dead / "claude").write_text('#!/bin/sh\necho "claude: cannot start" >&2\nexit 3\n')
    (dead / "claude").chmod(0o755)
    ran = run(GUIDE_BODY, _env(upstream, tmp_path, bin_first=dead), warm=warm)
    assert ran.exit_code == 1
    assert "claude: cannot start" in ran.stderr, "the CLI's stderr is the agent's"
    if warm:
        # No request yet, so no one to answer: the reason goes to stderr (clrk logs it and
        # starts another sandbox), nothing to stdout.
        assert ran.ready == b"", "never said it was ready"
        assert ran.stdout == ""
        assert "jq-bot: claude exited with status 3 before it was ready" in ran.stderr
        return
    message = "claude exited with status 3 without a result"
    assert json.loads(ran.stdout) == {"error": {"type": "model_error", "message": message}}
