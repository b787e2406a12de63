"""The shim's HTTP face, without sandboxes: probes, methods, caps, its own failures."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
import pytest

from clrk_runtime.invocation.outcomes import Response
from clrk_runtime.server.app import ShimApp
from clrk_runtime.service.runtime import AgentRuntime
from clrk_runtime.settings import RuntimeSettings


def _client(runtime: AgentRuntime) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=ShimApp(runtime, lifespan=False))
    return httpx.AsyncClient(transport=transport, base_url="http://shim")


async def test_not_started_is_not_ready_and_refuses_work() -> None:
    async with _client(AgentRuntime(RuntimeSettings(command=["cat"]))) as client:
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.get("/livez")).status_code == 200
        refused = await client.post("/", json={}, headers={"x-clrk-invocation-id": "i-1"})
    assert refused.status_code == 503
    invocation_id = refused.headers["x-clrk-invocation-id"]
    assert invocation_id == refused.json()["error"]["invocationId"] != "i-1", "a shim without a key mints ids"
    assert refused.headers["retry-after"] == "1"


async def test_get_is_405_and_big_bodies_413() -> None:
    runtime = AgentRuntime(RuntimeSettings(command=["cat"], stdin_cap=10))
    async with _client(runtime) as client:
        wrong = await client.get("/")
        big = await client.post("/", content=b"x" * 11)
    assert wrong.status_code == 405
    assert big.status_code == 413
    assert big.json()["error"]["type"] == "request_too_large"


async def test_a_bug_of_ours_is_still_a_json_error(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = AgentRuntime(RuntimeSettings(command=["cat"]))

    async def broken(headers: Mapping[str, str], body: bytes) -> Response:
        raise RuntimeError("boom")

    monkeypatch.setattr(runtime, "handle", broken)
    async with _client(runtime) as client:
        response = await client.post("/", json={})
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "internal"
    assert response.headers["x-clrk-invocation-id"]
