"""``clrk dev``'s server in-process: starting says why it cannot listen, stopping is prompt."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from clrk.dev.serving import DevServer
from clrk.dev.settings import DevSettings
from clrk.errors import ClrkError
from tests.support.jq_bot import ECHO_AGENT


def _server(tmp_path: Path, **settings: Any) -> DevServer:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "taskagent.yaml").write_text(ECHO_AGENT.format(script="cat"))
    given = {"apply": [str(manifests)], "port": 0, "state_dir": tmp_path / "state", "sandbox": "plain", **settings}
    return DevServer(DevSettings(**given), environ={})


async def test_a_port_in_use_is_one_clear_error_and_nothing_is_left_running(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = _server(tmp_path, port=port)
        with pytest.raises(ClrkError, match=f"cannot listen on 127.0.0.1:{port}: .*address already in use"):
            await server.start()
    assert server.egress is None and server.runtimes == {}, "what it had started is stopped"


async def test_stop_ends_the_watch_without_waiting_out_the_interval(tmp_path: Path) -> None:
    server = _server(tmp_path, reload_interval=600)
    await server.start()
    try:
        assert server.port
        watching = asyncio.create_task(server.watch())
        await asyncio.sleep(0.05)
        assert not watching.done()
    finally:
        stopping = time.monotonic()
        await server.stop()
    await asyncio.wait_for(watching, 10)
    assert time.monotonic() - stopping < 10
    assert server.runtimes == {} and server.egress is None


async def test_an_edit_is_reloaded_and_none_after_stop(tmp_path: Path) -> None:
    server = _server(tmp_path, reload_interval=0.05)
    await server.start()
    try:
        first = server.runtimes["default/echo"]
        watching = asyncio.create_task(server.watch())
        (tmp_path / "manifests" / "taskagent.yaml").write_text(ECHO_AGENT.format(script="echo reloaded"))
        deadline = time.monotonic() + 30
        while server.runtimes.get("default/echo") is first and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert server.runtimes["default/echo"] is not first, "a new shim for the edited manifest"
    finally:
        await server.stop()
    await asyncio.wait_for(watching, 10)
    (tmp_path / "manifests" / "taskagent.yaml").write_text(ECHO_AGENT.format(script="echo again"))
    assert await server.reload_if_changed() is False, "no reload once stopped"
    assert server.runtimes == {}
