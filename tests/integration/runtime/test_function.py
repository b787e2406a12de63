"""The shim as a functions-framework function (what ``functions-framework --asgi`` serves)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
from functions_framework.aio import create_asgi_app

import clrk_runtime.function
from tests.integration.runtime.conftest import SANDBOX_UID, SANDBOX_UIDS, agent


async def test_functions_framework_serves_the_shim(shim_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLRK_COMMAND", json.dumps([agent("echo.sh")]))
    monkeypatch.setenv("CLRK_SANDBOX", "plain")
    monkeypatch.setenv("CLRK_TEMP_ROOT", str(shim_root))
    monkeypatch.setenv("CLRK_SANDBOX_UID", str(SANDBOX_UID))
    monkeypatch.setenv("CLRK_SANDBOX_UIDS", str(SANDBOX_UIDS))
    # functions-framework loads the file as a fresh top-level module named "function" and puts
    # its folder on sys.path: undo both afterwards.
    monkeypatch.setattr(sys, "path", list(sys.path))
    app = create_asgi_app(target="clrk", source=clrk_runtime.function.__file__)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://ff") as client:
            response = await client.post("/", json={"k": "v"}, headers={"x-clrk-invocation-id": "ff-1"})
            ready = await client.get("/readyz")
    finally:
        loaded = sys.modules.pop("function")
        if loaded._runtime is not None:
            await loaded._runtime.stop()
    assert response.status_code == 200
    assert response.headers["x-clrk-invocation-id"] == "ff-1"
    assert response.json()["data"] == {"k": "v"}
    assert ready.status_code == 200
