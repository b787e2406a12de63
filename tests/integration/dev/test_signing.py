"""``clrk dev`` runs the cluster's path: its ingress signs every request with a platform key of
its own, and its shims, each given its namespace's request key, run nothing else. The server in
process; requests over its real socket, and straight to a shim's app as a local process could."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx

from clrk.dev.serving import DevServer
from clrk.dev.settings import DevSettings
from clrk_runtime.server.app import ShimApp
from tests.support.jq_bot import ECHO_AGENT


def _server(tmp_path: Path) -> DevServer:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "taskagent.yaml").write_text(ECHO_AGENT.format(script="cat"))
    settings = DevSettings(apply=[str(manifests)], port=0, state_dir=tmp_path / "state", sandbox="plain")
    return DevServer(settings, environ={})


async def test_the_ingress_signs_and_the_shim_refuses_what_it_did_not_sign(tmp_path: Path) -> None:
    server = _server(tmp_path)
    await server.start()
    try:
        runtime = server.runtimes["default/echo"]
        key_file = runtime.settings.request_key_file
        assert key_file is not None
        mode = stat.S_IMODE(key_file.stat().st_mode), stat.S_IMODE(key_file.parent.stat().st_mode)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:
            through = await client.post("/", json={"q": 1}, headers={"X-Clrk-TaskAgent": "default/echo"})
        shim = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=ShimApp(runtime, lifespan=False)), base_url="http://s"
        )
        async with shim:
            around = await shim.post(
                "/", json={"q": 1}, headers={"X-Clrk-Invocation-Id": through.headers["x-clrk-invocation-id"]}
            )
    finally:
        await server.stop()
    assert through.status_code == 200, through.text
    invocation_id = through.headers["x-clrk-invocation-id"]
    assert through.json()["id"] == through.json()["clrkinvocationid"] == invocation_id
    assert around.status_code == 401, around.text
    assert around.json()["error"]["type"] == "unsigned_request"
    assert mode == (0o600, 0o700), "the key is this process's user's alone"
    assert not key_file.exists() and not key_file.parent.exists(), "removed at stop"
