"""Capacity and lifecycle: the queue, the warm pool, readiness, tracing."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clrk_runtime.server.app import ShimApp
from clrk_runtime.service.runtime import AgentRuntime
from tests.integration.runtime.egress import gate_server
from tests.support.runtime import SANDBOX_RANGE, agent, sandbox_dirs, sandbox_processes, serving, settings_for


async def _until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) for a state the shim reaches on its own."""
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.005)


async def test_queue_overflow_is_503_with_retry_after(shim_root: Path) -> None:
    async with gate_server() as (port, opened):
        settings = settings_for(
            "plain",
            shim_root,
            [agent("gate.sh")],
            egress_proxy=f"127.0.0.1:{port}",
            max_concurrency=1,
            queue_size=1,
        )
        async with serving(settings) as (client, runtime):
            running = asyncio.create_task(client.post("/", json={}))
            queued = asyncio.create_task(client.post("/", json={}))
            await _until(lambda: runtime.stats.pool.busy == 1 and runtime.stats.pool.queued == 1)
            refused = await client.post("/", json={})
            opened.set()
            assert [(await running).status_code, (await queued).status_code] == [200, 200]
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "no_capacity"


async def test_warm_pool_is_used_and_refilled(shim_root: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = settings_for("plain", shim_root, [agent("echo.sh")], warm_pool=2)
    async with AgentRuntime(settings, tracer_provider=provider) as runtime:
        assert runtime.stats.pool.warm == 2
        responses = await asyncio.gather(*(runtime.handle({}, b"{}") for _ in range(3)))
        assert [r.status for r in responses] == [200, 200, 200]
        await _until(lambda: runtime.stats.pool.warm == 2)
    warm = sorted(
        bool(span.attributes and span.attributes["clrk.sandbox.warm"]) for span in exporter.get_finished_spans()
    )
    assert warm == [False, True, True]  # two from the pool, the third made on demand


async def test_a_warm_plain_sandbox_needs_no_shell(shim_root: Path) -> None:
    """The sandbox PATH holds ``cat`` and nothing else (a distroless image has no ``sh``): the warm
    pool fills (ready), with its directories made and nothing running before an invocation comes,
    and each invocation is served."""
    tools = Path(tempfile.mkdtemp(prefix="clrk-tools-"))
    try:
        tools.chmod(0o755)
        (tools / "cat").symlink_to(shutil.which("cat") or "/bin/cat")
        before = sandbox_processes()
        settings = settings_for("plain", shim_root, ["cat"], warm_pool=2, agent_path=str(tools))
        async with serving(settings) as (client, runtime):
            assert (await client.get("/readyz")).status_code == 200
            assert runtime.stats.pool.warm == 2
            made = sandbox_dirs(runtime)
            layout = [sorted(p.name for p in sandbox.iterdir()) for sandbox in made]
            assert layout == [["home", "meta", "tmp", "work"]] * 2
            if os.geteuid() == 0:
                assert all(sandbox.stat().st_uid in SANDBOX_RANGE for sandbox in made)
            assert sandbox_processes() == before, "a warm plain sandbox runs nothing before its invocation"
            answers = [await client.post("/", json={"n": n}) for n in range(3)]
            assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
            assert [a.json()["data"] for a in answers] == [{"n": 0}, {"n": 1}, {"n": 2}]
            await _until(lambda: runtime.stats.pool.warm == 2)
    finally:
        shutil.rmtree(tools)


async def test_readiness_follows_the_warm_pool_and_the_drain(shim_root: Path) -> None:
    runtime = AgentRuntime(settings_for("plain", shim_root, [agent("echo.sh")], warm_pool=1))
    transport = httpx.ASGITransport(app=ShimApp(runtime, lifespan=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://shim") as client:
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/livez")).status_code == 200
        await runtime.start()
        assert (await client.get("/readyz")).status_code == 200
        await runtime.stop()
        assert (await client.get("/readyz")).status_code == 503


async def test_trace_is_continued_and_handed_to_the_agent(shim_root: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with gate_server() as (port, opened):
        opened.set()
        settings = settings_for("plain", shim_root, [agent("gate.sh")], egress_proxy=f"127.0.0.1:{port}")
        async with AgentRuntime(settings, tracer_provider=provider) as runtime:
            response = await runtime.handle(
                {"traceparent": f"00-{trace_id}-{parent_id}-01"},
                b"{}",
            )
    (span,) = exporter.get_finished_spans()
    assert f"{span.context.trace_id:032x}" == trace_id
    assert span.parent is not None and f"{span.parent.span_id:016x}" == parent_id
    assert span.attributes is not None
    assert span.attributes["clrk.invocation.id"] == response.header("X-Clrk-Invocation-Id")
    assert span.attributes["clrk.exit_code"] == 0
    assert span.attributes["clrk.sandbox.kind"] == "plain"
    own = f"00-{trace_id}-{span.context.span_id:016x}-01"
    assert f"traceparent: {own}".encode() in response.body
