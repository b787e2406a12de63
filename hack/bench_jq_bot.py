#!/usr/bin/env python3
"""Benchmark jq-bot end to end: the guide's call through a real ``clrk dev``, next to the CLI's floors.

The real Claude CLI (``.venv/bin/claude``) talks to the local fake Anthropic API over TLS, which
answers at once, so every figure is what clrk and the agent's own start-up cost, not the model's.
Each row is ``--calls`` sequential calls of the guide's request (tests/support/jq_bot.py), every
answer checked against the guide's answer; p50, p90 and max:

* ``cold``: jq-bot with ``spec.warmPoolSize: 0``, through ``clrk dev`` and its egress gateway;
* ``warm pool``: the same with ``warmPoolSize: 2`` and ``warmStart: false`` (the sandbox is ready,
  the agent starts on request);
* ``warm start``: ``warmPoolSize: 2`` and ``warmStart: true``: the sandbox's agent.sh started the
  CLI and had it initialised before the request came (examples/jq-bot/agent.sh).

The warm rows pause ``--pause`` s between calls, so that each call finds a ready sandbox (a warm
start takes the CLI's start-up, ~0.3-0.5 s here, to refill); the cold row does not.

Floors, measured in the same run against the same fake, the CLI with jq-bot's flags
(examples/jq-bot/agent.sh), straight to the fake (``ANTHROPIC_BASE_URL`` + ``NODE_EXTRA_CA_CERTS``,
no egress gateway, no sandbox, no bash or jq):

* ``CLI from nothing``: ``claude -p`` started per sample, from process start to its answer;
* ``CLI started, 1st prompt``: ``--input-format stream-json`` started per sample and left idle for
  ``--idle`` s, timed from writing the one prompt to its ``result`` event;
* ``CLI initialised, 1st prompt``: the same, but sent the SDK's ``initialize`` control request and
  answered before the idle time (what jq-bot's agent.sh does before it says it is ready): what a
  warm-started jq-bot could at best answer in, the floor warm start is measured against;
* ``CLI started, next prompt``: one stream-json process for all samples (after one untimed prompt),
  timed from writing each prompt to its ``result`` (the conversation grows by a turn each time).

What the stream-json CLI (2.1.331) was seen to do: it prints ``{"type":"system","subtype":"ui_invalidate"}``
once started, before any input; its ``system``/``init`` event comes only after the first message
(40-70 ms later), and the first message opens the TLS connection to the API, so a started CLI's first
prompt costs several times its next one. An ``initialize`` control request moves that lazy start-up
ahead (~50 ms less on the first prompt); the TLS connection is still opened with the first prompt
(the CLI's own preconnect is skipped whenever a proxy is set, as in a sandbox).

Not a test: it prints.

    .venv/bin/python hack/bench_jq_bot.py [--calls 20]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.clrk_dev import clrk_dev  # noqa: E402
from tests.support.fake_anthropic import FakeAnthropic  # noqa: E402
from tests.support.jq_bot import GUIDE_ANSWER, GUIDE_BODY, JQ_FILTER  # noqa: E402
from tests.support.threaded import in_thread  # noqa: E402
from tests.support.tlsca import TestCA  # noqa: E402

CLAUDE = ROOT / ".venv" / "bin" / "claude"
SCHEMA = (
    '{"type":"object","properties":{"filter":{"type":"string"}},"required":["filter"],"additionalProperties":false}'
)
SYSTEM = (
    "You write jq filters. Given a JSON input and a description of the wanted output, answer with one jq filter"
    " that produces exactly that output from that input. Prefer simple, idiomatic filters."
)
PROMPT = (
    'Input:\n[{"name":"alice","age":30,"role":"eng"},{"name":"bob","age":42,"role":"pm"},'
    '{"name":"carol","age":25,"role":"eng"}]\n\nWanted output: names of engineers, ascending by age\n'
)
"""What agent.sh sends the CLI for the guide's request."""
FLAGS = [
    "-p", "--bare", "--no-session-persistence", "--tools", "", "--model", "claude-haiku-4-5",
    "--system-prompt", SYSTEM, "--json-schema", SCHEMA,
]  # fmt: skip
"""jq-bot's flags (examples/jq-bot/agent.sh), less the output format."""
STREAM_FLAGS = ["--input-format", "stream-json", "--output-format", "stream-json", "--verbose"]


def _row(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    cells = (statistics.median(ordered) * 1000, p90 * 1000, ordered[-1] * 1000)
    return f"{name:<28} {len(samples):>3} {cells[0]:>9.0f} {cells[1]:>9.0f} {cells[2]:>9.0f}"


def _manifests(root: Path, name: str, warm_pool: int, warm_start: bool) -> Path:
    """A copy of examples/jq-bot with ``spec.warmPoolSize`` and ``spec.warmStart`` set; returns its
    manifests folder."""
    target = root / f"jq-bot-{name}"
    shutil.copytree(ROOT / "examples" / "jq-bot", target)
    manifest = target / "manifests" / "taskagent.yaml"
    text = manifest.read_text()
    text = re.sub(r"(?m)^  warmStart: \w+\n", "", text)
    text, count = re.subn(
        r"(?m)^  warmPoolSize: \d+$", f"  warmPoolSize: {warm_pool}\n  warmStart: {str(warm_start).lower()}", text
    )
    if count != 1:
        raise RuntimeError(f"no warmPoolSize line in {manifest}")
    manifest.write_text(text)
    return target / "manifests"


def _through_dev(
    root: Path, ca: TestCA, fake: FakeAnthropic, name: str, warm_pool: int, warm_start: bool, calls: int, pause: float
) -> list[float]:
    """``calls`` sequential guide's calls to jq-bot under a fresh ``clrk dev`` (after one untimed),
    ``pause`` s apart."""
    state = root / f"state-{name}"
    args = [
        "--apply", str(_manifests(root, name, warm_pool, warm_start)),
        "--secret", "anthropic-credentials=ANTHROPIC_API_KEY:api-key",
        "--state-dir", str(state),
        "--egress-upstream", f"api.anthropic.com:443={fake.address}",
        "--egress-upstream-ca", str(ca.cert_path),
    ]  # fmt: skip
    env = {**os.environ, "ANTHROPIC_API_KEY": "sk-ant-bench-" + "0" * 40}
    env["PATH"] = f"{CLAUDE.parent}{os.pathsep}{env.get('PATH', os.defpath)}"
    headers = {"content-type": "application/json", "X-Clrk-TaskAgent": "default/jq-bot"}
    with clrk_dev(args, env) as running, httpx.Client(base_url=running.url, headers=headers, timeout=60) as client:

        def call() -> float:
            started = time.perf_counter()
            response = client.post("/", content=GUIDE_BODY)
            elapsed = time.perf_counter() - started
            if response.status_code != 200 or response.text.strip() != GUIDE_ANSWER:
                raise RuntimeError(f"{response.status_code} {response.text!r}\n{running.log_text()[-3000:]}")
            return elapsed

        call()  # untimed: the first sandbox, the gateway's first upstream connection
        samples = []
        for _ in range(calls):
            time.sleep(pause)  # the pool refilled before each call
            samples.append(call())
        return samples


def _cli_env(root: Path, ca: TestCA, fake: FakeAnthropic) -> dict[str, str]:
    """A fresh HOME and TMPDIR, the fake as the API over verified TLS, the flags jq-bot's pod sets."""
    scratch = Path(tempfile.mkdtemp(dir=root))
    (scratch / "home").mkdir()
    (scratch / "tmp").mkdir()
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(scratch / "home"),
        "TMPDIR": str(scratch / "tmp"),
        "ANTHROPIC_API_KEY": "clrk-injected-by-proxy",
        "ANTHROPIC_BASE_URL": f"https://127.0.0.1:{fake.port}",
        "NODE_EXTRA_CA_CERTS": str(ca.cert_path),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "2",
    }


def _check(answer: dict[str, object]) -> None:
    if answer.get("is_error") is not False or answer.get("structured_output") != {"filter": JQ_FILTER}:
        raise RuntimeError(f"the CLI did not answer the filter: {json.dumps(answer)[:500]}")


def _cli_from_nothing(root: Path, ca: TestCA, fake: FakeAnthropic) -> float:
    env = _cli_env(root, ca, fake)
    started = time.perf_counter()
    done = subprocess.run(
        [str(CLAUDE), *FLAGS, "--output-format", "json"],
        input=PROMPT, capture_output=True, text=True, env=env, cwd=env["TMPDIR"], timeout=60, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"claude exited {done.returncode}: {done.stderr[-1000:]}")
    _check(json.loads(done.stdout))
    return elapsed


def _stream_cli(root: Path, ca: TestCA, fake: FakeAnthropic) -> subprocess.Popen[str]:
    env = _cli_env(root, ca, fake)
    return subprocess.Popen(
        [str(CLAUDE), *FLAGS, *STREAM_FLAGS],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        cwd=env["TMPDIR"],
    )  # fmt: skip


def _prompt(process: subprocess.Popen[str]) -> float:
    """Write one user message to a stream-json CLI; seconds until its ``result`` event."""
    stdin: IO[str] | None = process.stdin
    stdout: IO[str] | None = process.stdout
    assert stdin is not None and stdout is not None
    message = {"type": "user", "message": {"role": "user", "content": PROMPT}}
    started = time.perf_counter()
    stdin.write(json.dumps(message) + "\n")
    stdin.flush()
    while line := stdout.readline():
        event = json.loads(line)
        if event.get("type") == "result":
            elapsed = time.perf_counter() - started
            _check(event)
            return elapsed
    raise RuntimeError(f"the CLI ended without a result (exit {process.wait()})")


def _end(process: subprocess.Popen[str]) -> None:
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def _initialise(process: subprocess.Popen[str]) -> None:
    """The SDK's ``initialize`` control request, and its answer (as jq-bot's agent.sh does)."""
    assert process.stdin is not None and process.stdout is not None
    request = {"type": "control_request", "request_id": "init", "request": {"subtype": "initialize"}}
    process.stdin.write(json.dumps(request) + "\n")
    process.stdin.flush()
    while line := process.stdout.readline():
        if json.loads(line).get("type") == "control_response":
            return
    raise RuntimeError(f"the CLI ended before answering initialize (exit {process.wait()})")


def _first_prompt(root: Path, ca: TestCA, fake: FakeAnthropic, idle: float, initialised: bool) -> float:
    process = _stream_cli(root, ca, fake)
    try:
        if initialised:
            _initialise(process)
        time.sleep(idle)  # the CLI's start-up, paid before the request (as a warm-started sandbox would)
        if process.poll() is not None:
            raise RuntimeError(f"the CLI exited while idle ({process.returncode})")
        return _prompt(process)
    finally:
        _end(process)


def _next_prompts(root: Path, ca: TestCA, fake: FakeAnthropic, calls: int) -> list[float]:
    process = _stream_cli(root, ca, fake)
    try:
        _prompt(process)  # untimed: start-up and the first turn
        return [_prompt(process) for _ in range(calls)]
    finally:
        _end(process)


def _timed(samples: int, one: Callable[[], float]) -> list[float]:
    one()  # untimed warm-up: page cache, the fake's first connection
    return [one() for _ in range(samples)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=20, help="timed calls per row")
    parser.add_argument("--idle", type=float, default=1.0, help="s a pre-started CLI waits before its prompt")
    parser.add_argument("--started", type=int, default=8, help="samples of each 'CLI …, 1st prompt' row")
    parser.add_argument("--pause", type=float, default=1.5, help="s between calls of the warm rows")
    args = parser.parse_args()
    if not os.access(CLAUDE, os.X_OK):
        sys.exit(f"no Claude CLI at {CLAUDE}: run `make install`")
    version = subprocess.run([str(CLAUDE), "--version"], capture_output=True, text=True, check=True).stdout.strip()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-jq-bot-") as scratch:
        root = Path(scratch)
        ca = TestCA.create(root / "ca")
        leaf = ca.issue(["api.anthropic.com", "127.0.0.1"])
        with in_thread(FakeAnthropic(leaf)) as fake:
            fake.behaviour.structured_output = {"filter": JQ_FILTER}
            print(f"cpus: {os.cpu_count()}, claude {version}, fake upstream answering at once, guide's request")
            print("clrk dev rows: through the egress gateway; floors: the CLI straight to the fake (no gateway)")
            print(f"{'what':<28} {'n':>3} {'p50 ms':>9} {'p90 ms':>9} {'max ms':>9}")
            print(_row("CLI from nothing", _timed(args.calls, lambda: _cli_from_nothing(root, ca, fake))))
            started = _timed(args.started, lambda: _first_prompt(root, ca, fake, args.idle, initialised=False))
            print(_row("CLI started, 1st prompt", started))
            ready = _timed(args.started, lambda: _first_prompt(root, ca, fake, args.idle, initialised=True))
            print(_row("CLI initialised, 1st prompt", ready))
            print(_row("CLI started, next prompt", _next_prompts(root, ca, fake, args.calls)))
            print(_row("clrk dev: cold", _through_dev(root, ca, fake, "cold", 0, False, args.calls, 0.0)))
            warm = _through_dev(root, ca, fake, "pool", 2, False, args.calls, args.pause)
            print(_row("clrk dev: warm pool", warm))
            warm_start = _through_dev(root, ca, fake, "start", 2, True, args.calls, args.pause)
            print(_row("clrk dev: warm start", warm_start))
            over = (statistics.median(warm_start) - statistics.median(ready)) * 1000
            print(f"warm start p50 over the initialised CLI's 1st prompt p50: {over:.0f} ms")
    print(f"({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
