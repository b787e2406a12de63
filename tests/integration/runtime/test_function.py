"""The shim served through functions-framework: `clrk-shim --server functions-framework`, and
functions-framework loading the function source on its own. Answers are the default server's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
from functions_framework.aio import create_asgi_app

import clrk_runtime.server.functions
from tests.support.runtime import SANDBOX_UID, SANDBOX_UIDS, agent, shim_port, shim_process


async def test_clrk_shim_serves_through_functions_framework(shim_root: Path) -> None:
    async with shim_process(
        shim_root, "--server", "functions-framework", "--sandbox", "plain", "--", agent("echo.sh")
    ) as shim:
        port = await shim_port(shim)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            ready = await client.get("/readyz")
            answered = await client.post("/", json={"k": "v"}, headers={"x-clrk-invocation-id": "ff-1"})
            refused = await client.post("/", content=b"{not json", headers={"content-type": "application/json"})
            robots = await client.get("/robots.txt")
        shim.terminate()
        assert await shim.wait() == 0
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert answered.status_code == 200
    assert answered.headers["x-clrk-invocation-id"] == answered.json()["id"] != "ff-1", "a shim without a key mints ids"
    assert answered.json()["data"] == {"k": "v"}
    # The same refusals as the default server: the platform's JSON error, an invocation id.
    assert refused.status_code == 400
    assert refused.json()["error"]["type"] == "invalid_json"
    assert refused.headers["x-clrk-invocation-id"] == refused.json()["error"]["invocationId"]
    assert robots.status_code == 404, "functions-framework's own routes stay its own"


async def test_functions_framework_loads_the_source_on_its_own(
    shim_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``functions-framework --asgi --source …/functions.py --target clrk``: settings from CLRK_*."""
    monkeypatch.setenv("CLRK_COMMAND", json.dumps([agent("echo.sh")]))
    monkeypatch.setenv("CLRK_SANDBOX", "plain")
    monkeypatch.setenv("CLRK_TEMP_ROOT", str(shim_root))
    monkeypatch.setenv("CLRK_SANDBOX_UID", str(SANDBOX_UID))
    monkeypatch.setenv("CLRK_SANDBOX_UIDS", str(SANDBOX_UIDS))
    # functions-framework loads the file as a fresh top-level module named after it and puts its
    # folder on sys.path: undo both afterwards.
    monkeypatch.setattr(sys, "path", list(sys.path))
    app = create_asgi_app(target="clrk", source=clrk_runtime.server.functions.__file__)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://ff") as client:
            response = await client.post("/", json={"k": "v"}, headers={"x-clrk-invocation-id": "ff-2"})
            ready = await client.get("/readyz")
    finally:
        loaded = sys.modules.pop("functions")
        if loaded._served is not None:
            await loaded._served.runtime.stop()
    assert response.status_code == 200
    assert response.headers["x-clrk-invocation-id"] == response.json()["id"] != "ff-2", "a shim without a key mints ids"
    assert response.json()["data"] == {"k": "v"}
    assert ready.status_code == 200
