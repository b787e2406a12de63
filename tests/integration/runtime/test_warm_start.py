"""Warm start as a user of the shim sees it: a warm sandbox's agent starts before its request and
says when it is ready; one that cannot start is never handed a request, and after a few failures
the shim falls back to starting agents on request. Real agents (``sh -c`` programs) in real plain
and bubblewrap sandboxes, the shim in-process as root with sandbox uids."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clrk_runtime.invocation.environment import PER_REQUEST, READY_FD
from clrk_runtime.invocation.outcomes import Response
from clrk_runtime.service.runtime import WARM_START_PREFIX, AgentRuntime
from clrk_runtime.service.warming import FALLBACK_AFTER, WarmStartStats
from clrk_runtime.settings import RuntimeSettings
from tests.support.processes import live_processes
from tests.support.runtime import KINDS, SANDBOX_RANGE, settings_for

TIMEOUT = 30.0
"""Seconds each invocation may run (the deadline its envelope names counts from its request)."""

PROBE = r"""
# A warm-start probe: what it saw at start-up, then what it saw once its request came.
seen=$(cat "$MARK_DIR/now" 2>/dev/null || echo absent)
names=$(env | cut -d= -f1 | sort | tr '\n' ' ')
startup=$(cat /proc/sys/kernel/random/uuid)
echo "started $startup" >&2
[ -n "${CLRK_READY_FD:-}" ] && echo ready >&"$CLRK_READY_FD"
envelope=$(cat)
later=$(cat "$MARK_DIR/now" 2>/dev/null || echo absent)
jq -cn --arg seen "$seen" --arg later "$later" --arg names "$names" --arg startup "$startup" \
  --arg deadline "${CLRK_METADATA_DEADLINE:-}" --arg traceparent "${TRACEPARENT:-}" \
  --argjson envelope "$envelope" \
  '{$seen, $later, names: ($names | split(" ") | map(select(. != ""))), $startup, $deadline, $traceparent, $envelope}'
"""
"""Answers what it read of ``$MARK_DIR/now`` at start-up (``seen``) and once its request came
(``later``), the names in its environment, an id it drew at start-up (also logged on stderr), its
per-request variables and the envelope it was given."""

ON_REQUEST = 'cat >/dev/null; echo "served on request"'
"""How the failing agents below answer when started on request (no ``$CLRK_READY_FD``)."""


@pytest.fixture
def mark_dir() -> Iterator[Path]:
    """A folder the test writes and every sandbox can read (bubblewrap hides the host's /tmp)."""
    folder = Path(tempfile.mkdtemp(prefix="clrk-test-marks-", dir="/var/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _mark(folder: Path, text: str) -> None:
    """``folder/now`` holds ``text`` (whole: written aside, then renamed in)."""
    aside = folder / "now.new"
    aside.write_text(text)
    aside.chmod(0o644)
    aside.rename(folder / "now")


def _tracer() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _traceparent(exporter: InMemorySpanExporter, invocation_id: str) -> str:
    """The ``traceparent`` of the invocation span of ``invocation_id``."""
    [span] = [
        span
        for span in exporter.get_finished_spans()
        if span.name == "clrk.invocation" and (span.attributes or {}).get("clrk.invocation.id") == invocation_id
    ]
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


async def _until(condition: Callable[[], bool], within: float = 30) -> None:
    """Wait (polling) until ``condition()`` holds; fails after ``within`` seconds."""
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.02)


def _moment(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name.startswith("clrk_runtime")]


def _warm_start_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The ``clrk-warm-start`` lines logged, parsed."""
    return [
        json.loads(message.removeprefix(WARM_START_PREFIX))
        for message in _logged(caplog)
        if message.startswith(WARM_START_PREFIX)
    ]


def _long() -> str:
    """A long sleep's seconds that mark its processes (the agents get it as ``$LONG``: their own
    command lines do not hold it)."""
    return f"4000.{secrets.randbelow(10**6)}"


def _marked(long: str) -> dict[int, str]:
    """Live sandbox processes sleeping ``long`` (other tests may run sandboxes of the same uid
    range meanwhile)."""
    return {pid: cmd for pid, cmd in live_processes(SANDBOX_RANGE).items() if cmd.split() == ["sleep", long]}


def _warm(kind: str, root: Path, script: str, **fields: Any) -> RuntimeSettings:
    return settings_for(kind, root, ["sh", "-c", script], warm_start=True, warm_pool=1, timeout=TIMEOUT, **fields)


async def _probe(runtime: AgentRuntime, folder: Path, mark: str) -> tuple[Response, dict[str, Any], float, float]:
    """Mark ``folder`` with ``mark``, then send one request: its answer, parsed, and the moments
    just before and after it."""
    _mark(folder, mark)
    before = time.time()
    response = await runtime.handle({"content-type": "application/json"}, b'{"q": 1}')
    after = time.time()
    assert response.status == 200, response.body
    return response, json.loads(response.body), before, after


@pytest.mark.parametrize("kind", KINDS)
async def test_a_warm_started_agent_starts_before_its_request(
    kind: str, shim_root: Path, mark_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each request is served by an agent that was started (and read ``now``) before the request's
    mark was written, and that learns from its envelope what its environment cannot say."""
    caplog.set_level(logging.INFO, logger="clrk_runtime")
    provider, exporter = _tracer()
    settings = _warm(kind, shim_root, PROBE, agent_env={"MARK_DIR": str(mark_dir)})
    answers = []
    async with AgentRuntime(settings, tracer_provider=provider) as runtime:
        assert runtime.stats.pool.warm_start == WarmStartStats("on", 0, 0, "")
        assert runtime.stats.pool.warm == 1
        for n in range(2):
            await _until(lambda: runtime.stats.pool.warm == 1)  # the refill's agent said it is ready
            answers.append(await _probe(runtime, mark_dir, f"request {n}"))
        assert runtime.stats.pool.warm_start.failures == 0
    logged = _logged(caplog)
    for n, (response, answer, before, after) in enumerate(answers):
        invocation_id = response.header("X-Clrk-Invocation-Id")
        assert invocation_id is not None
        assert answer["seen"] != f"request {n}", "its start-up ran before the request's mark was written"
        assert answer["later"] == f"request {n}", "it reads the mark folder (the test can fail)"
        names = set(answer["names"])
        assert {READY_FD, "CLRK_METADATA_AGENT", "CLRK_METADATA_NAME", "HOME", "TMPDIR"} <= names
        assert names.isdisjoint(PER_REQUEST), "a process started before its request cannot know them"
        envelope = answer["envelope"]
        assert envelope["clrkinvocationid"] == invocation_id
        assert envelope["data"] == {"q": 1}
        deadline = _moment(envelope["clrkdeadline"])
        assert before + TIMEOUT - 0.001 <= deadline <= after + TIMEOUT, "the deadline counts from the request"
        assert envelope["traceparent"] == _traceparent(exporter, invocation_id)
        started = [line for line in logged if line.endswith(f"] started {answer['startup']}")]
        assert len(started) == 1 and started[0].startswith("[team/bot start-up "), "logged as a start-up"
        assert invocation_id not in started[0], "the start-up id is not the invocation's"
    assert answers[0][1]["startup"] != answers[1][1]["startup"], "one start-up per request"


@pytest.mark.parametrize("kind", KINDS)
async def test_the_shim_is_ready_once_its_warm_agents_are(kind: str, shim_root: Path, mark_dir: Path) -> None:
    """While a warm sandbox's agent starts, the stats count it ``starting`` and the shim is not
    ready; once it said it is ready, the sandbox counts as warm."""
    gated = f'until [ -e "$MARK_DIR/gate" ]; do sleep 0.02; done; {PROBE}'
    runtime = AgentRuntime(_warm(kind, shim_root, gated, agent_env={"MARK_DIR": str(mark_dir)}))
    starting = asyncio.ensure_future(runtime.start())
    try:
        await _until(lambda: runtime._pool is not None and runtime.stats.pool.warm_start.starting == 1)
        assert not starting.done() and not runtime.ready
        assert runtime.stats.pool.warm == 0, "a sandbox whose agent is starting is not ready for a request"
        (mark_dir / "gate").touch()
        await asyncio.wait_for(starting, 30)
        stats = runtime.stats.pool
        assert runtime.ready and (stats.warm, stats.warm_start.starting, stats.warm_start.state) == (1, 0, "on")
    finally:
        if not starting.done():
            (mark_dir / "gate").touch()
            await asyncio.wait({starting})
        await runtime.stop()


@pytest.mark.parametrize("warm_pool", [0, 1])
@pytest.mark.parametrize("kind", KINDS)
async def test_without_warm_start_nothing_changed(kind: str, warm_pool: int, shim_root: Path, mark_dir: Path) -> None:
    """The agent starts on its request, its environment names the request, and the envelope too."""
    provider, exporter = _tracer()
    settings = settings_for(
        kind,
        shim_root,
        ["sh", "-c", PROBE],
        warm_pool=warm_pool,
        timeout=TIMEOUT,
        agent_env={"MARK_DIR": str(mark_dir)},
    )
    async with AgentRuntime(settings, tracer_provider=provider) as runtime:
        assert runtime.stats.pool.warm_start == WarmStartStats("off", 0, 0, "")
        response, answer, before, after = await _probe(runtime, mark_dir, "request")
    invocation_id = response.header("X-Clrk-Invocation-Id")
    assert invocation_id is not None
    assert answer["seen"] == "request", "started on request"
    names = set(answer["names"])
    assert READY_FD not in names
    assert set(PER_REQUEST) <= names
    envelope = answer["envelope"]
    assert envelope["clrkinvocationid"] == invocation_id
    assert envelope["clrkdeadline"] == answer["deadline"], "the envelope's deadline is the environment's"
    assert before + TIMEOUT - 0.001 <= _moment(envelope["clrkdeadline"]) <= after + TIMEOUT
    assert envelope["traceparent"] == answer["traceparent"] == _traceparent(exporter, invocation_id)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_request_that_finds_no_ready_sandbox_starts_its_agent_on_request(
    kind: str, shim_root: Path, mark_dir: Path
) -> None:
    """Two requests at once, one warm sandbox: one is served ahead, the other as without warm start."""
    provider, _ = _tracer()
    settings = _warm(kind, shim_root, PROBE, agent_env={"MARK_DIR": str(mark_dir)})
    async with AgentRuntime(settings, tracer_provider=provider) as runtime:
        _mark(mark_dir, "requests")
        responses = await asyncio.gather(*(runtime.handle({}, b"{}") for _ in range(2)))
    assert [r.status for r in responses] == [200, 200], [r.body for r in responses]
    answers = sorted((json.loads(r.body) for r in responses), key=lambda answer: READY_FD in answer["names"])
    on_request, ahead = answers
    assert READY_FD in ahead["names"] and ahead["seen"] == "absent"
    assert READY_FD not in on_request["names"] and set(PER_REQUEST) <= set(on_request["names"])
    assert on_request["seen"] == "requests"
    assert on_request["envelope"]["clrkdeadline"] == on_request["deadline"]


def _failing(caplog: pytest.LogCaptureFixture, reason: str) -> None:
    """The two ``clrk-warm-start`` lines: on at start, failing after FALLBACK_AFTER failures."""
    lines = _warm_start_lines(caplog)
    assert [line["state"] for line in lines] == ["on", "failing"], lines
    assert (lines[0]["failures"], lines[0]["reason"]) == (0, "")
    assert lines[1]["failures"] == FALLBACK_AFTER and reason in lines[1]["reason"]
    assert all(line.get("agent", "team/bot") == "team/bot" for line in lines), "if named, the agent is this one"


async def _served_on_request(runtime: AgentRuntime) -> None:
    for _ in range(2):
        response = await runtime.handle({}, b"{}")
        assert (response.status, response.body) == (200, b"served on request\n")


@pytest.mark.parametrize("kind", KINDS)
async def test_an_agent_that_exits_during_start_up_is_never_handed_a_request(
    kind: str, shim_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clrk_runtime")
    script = f"""if [ -n "${{CLRK_READY_FD:-}}" ]; then echo "no model at /models/x" >&2; exit 7; fi; {ON_REQUEST}"""
    async with AgentRuntime(_warm(kind, shim_root, script)) as runtime:
        stats = runtime.stats.pool.warm_start
        await _served_on_request(runtime)
        assert runtime.stats.pool.warm == 1, "the pool keeps a (cold-started) warm sandbox"
    assert (stats.state, stats.failures, stats.starting) == ("failing", FALLBACK_AFTER, 0)
    assert "exited with status 7" in stats.reason and "no model at /models/x" in stats.reason
    failures = [line for line in _logged(caplog) if line.startswith("team/bot: warm start failed")]
    assert len(failures) == FALLBACK_AFTER, failures
    for line in failures:
        assert "exited with status 7 before it said it was ready" in line and "no model at /models/x" in line
    stderr = [line for line in _logged(caplog) if line.endswith("] no model at /models/x")]
    assert len(stderr) == FALLBACK_AFTER and all(line.startswith("[team/bot start-up ") for line in stderr)
    _failing(caplog, "exited with status 7")


@pytest.mark.parametrize("kind", KINDS)
async def test_an_agent_that_never_says_it_is_ready_is_killed_and_replaced(
    kind: str, shim_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clrk_runtime")
    long = _long()
    script = f"""if [ -n "${{CLRK_READY_FD:-}}" ]; then sleep "$LONG" & sleep "$LONG"; fi; {ON_REQUEST}"""
    settings = _warm(kind, shim_root, script, warm_start_timeout=0.3, agent_env={"LONG": long})
    async with AgentRuntime(settings) as runtime:
        stats = runtime.stats.pool.warm_start
        assert _marked(long) == {}, "each hung start-up's processes are killed with its sandbox"
        await _served_on_request(runtime)
    assert (stats.state, stats.failures) == ("failing", FALLBACK_AFTER)
    assert "not ready after 0.3s (CLRK_WARM_START_TIMEOUT)" in stats.reason
    assert f"${READY_FD}" in stats.reason, "the reason says what the agent must do"
    _failing(caplog, "CLRK_WARM_START_TIMEOUT")
    assert _marked(long) == {}


@pytest.mark.parametrize("kind", KINDS)
async def test_an_agent_that_dies_while_it_waits_is_replaced_and_never_handed_a_request(
    kind: str, shim_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clrk_runtime")
    script = (
        f'if [ -n "${{CLRK_READY_FD:-}}" ]; then echo ready >&"$CLRK_READY_FD"; echo "lost my model" >&2; exit 3; fi;'
        f" {ON_REQUEST}"
    )
    async with AgentRuntime(_warm(kind, shim_root, script)) as runtime:
        await _until(lambda: runtime.stats.pool.warm_start.state == "failing", within=10)
        stats = runtime.stats.pool.warm_start
        await _served_on_request(runtime)
    assert stats.failures == FALLBACK_AFTER
    assert stats.reason == "exited with status 3 while it waited for its request"
    stderr = [line for line in _logged(caplog) if line.endswith("] lost my model")]
    assert len(stderr) >= FALLBACK_AFTER and all(line.startswith("[team/bot start-up ") for line in stderr)
    _failing(caplog, "while it waited for its request")


@pytest.mark.parametrize("kind", KINDS)
async def test_stdout_written_before_the_request_is_no_part_of_the_answer(
    kind: str, shim_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clrk_runtime")
    script = 'echo "loading the model"; echo ready >&"$CLRK_READY_FD"; cat >/dev/null; echo "the answer"'
    async with AgentRuntime(_warm(kind, shim_root, script)) as runtime:
        response = await runtime.handle({}, b"{}")
    assert (response.status, response.body) == (200, b"the answer\n")
    warnings = [line for line in _logged(caplog) if "wrote to stdout before its request" in line]
    assert warnings, "the agent's author learns why their output went missing"
    assert all(line.startswith("[team/bot start-up ") for line in warnings), warnings  # (the refill's may warn too)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_warm_started_agent_past_its_deadline_is_killed_with_everything_it_started(
    kind: str, shim_root: Path
) -> None:
    """The deadline counts from the request, not from the start-up; at it the agent's whole tree
    goes, as for an agent started on request."""
    long = _long()
    script = 'echo ready >&"$CLRK_READY_FD"; cat >/dev/null; sleep "$LONG" & sleep "$LONG"'
    async with AgentRuntime(_warm(kind, shim_root, script, agent_env={"LONG": long})) as runtime:
        response = await runtime.handle({"x-clrk-timeout-ms": "500"}, b"{}")
        assert response.status == 504, response.body
        assert _marked(long) == {}, "nothing of the invocation is left"
        assert runtime.stats.pool.warm_start.failures == 0, "a slow invocation is no failed start-up"


@pytest.mark.parametrize("kind", KINDS)
async def test_a_shim_stopped_while_its_agent_starts_leaves_nothing(kind: str, shim_root: Path, mark_dir: Path) -> None:
    long = _long()
    script = 'sleep "$LONG" & sleep "$LONG"'
    runtime = AgentRuntime(_warm(kind, shim_root, script, agent_env={"LONG": long}))
    starting = asyncio.ensure_future(runtime.start())
    await _until(lambda: len(_marked(long)) >= 2)  # the agent is starting (and never says it is ready)
    starting.cancel()  # as a shim told to stop while it starts
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert _marked(long) == {}
    assert list(shim_root.iterdir()) == []
