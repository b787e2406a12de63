"""Standalone serving: config file loading, clear errors, hot reload, clean stop."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from clrk.api.egress import EgressConfig
from clrk.egress import serving
from clrk.egress.gateway import EgressGateway
from clrk.egress.secrets import StaticSecrets
from clrk.egress.settings import EgressSettings
from clrk.errors import EgressPolicyError
from tests.support.egress import TOKEN_KEY, GatewayCA, make_config


def test_load_config_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "c.json"
    bad.write_text('{"agents": {"a/b": {"allow": 3}}}')
    with pytest.raises(EgressPolicyError, match=r"c.json: agents.a/b.allow"):
        serving.load_config(bad)
    with pytest.raises(EgressPolicyError, match="No such file"):
        serving.load_config(tmp_path / "missing.json")
    assert serving.load_config(None).agents == {}


async def test_serve_reloads_the_config_file(
    tmp_path: Path, gateway_ca: GatewayCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving, "_RELOAD_EVERY_S", 0.05)
    gateway_ca.seed(tmp_path / "state")
    config_file = tmp_path / "egress.json"
    config_file.write_text(make_config().model_dump_json())
    settings = EgressSettings(
        state_dir=tmp_path / "state",
        egress_listen_port=0,
        egress_config_file=config_file,
        egress_token_key=TOKEN_KEY.decode(),
    )
    seen: list[EgressConfig] = []

    class Spy(EgressGateway):
        def update_config(self, config: EgressConfig) -> None:
            super().update_config(config)
            seen.append(config)

    monkeypatch.setattr(serving, "EgressGateway", Spy)
    stop = asyncio.Event()
    task = asyncio.create_task(serving.serve(settings, StaticSecrets(), stop=stop))
    await asyncio.sleep(0.3)
    config_file.write_text(make_config(budget_tokens=5).model_dump_json())
    os.utime(config_file, (1, 1))
    for _ in range(40):
        if seen:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert seen and seen[-1].agents["default/bot"].budget is not None
    assert (tmp_path / "state" / "egress" / "ca-bundle.pem").exists()


async def test_port_in_use_is_a_clear_error(tmp_path: Path, gateway_ca: GatewayCA) -> None:
    import socket

    gateway_ca.seed(tmp_path)

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = EgressSettings(state_dir=tmp_path, egress_listen_port=port)
        gateway = EgressGateway(settings, make_config(), StaticSecrets(), token_key=TOKEN_KEY)
        with pytest.raises(EgressPolicyError, match=f"cannot listen on 127.0.0.1:{port}"):
            await gateway.start()


async def test_gateway_leaves_the_root_logger_alone(tmp_path: Path, gateway_ca: GatewayCA) -> None:
    import logging

    gateway_ca.seed(tmp_path)

    before = list(logging.getLogger().handlers)
    settings = EgressSettings(state_dir=tmp_path, egress_listen_port=0)
    gateway = EgressGateway(settings, make_config(), StaticSecrets(), token_key=TOKEN_KEY)
    await gateway.start()
    try:
        assert logging.getLogger().handlers == before
    finally:
        await gateway.stop()
    assert logging.getLogger().handlers == before
    await gateway.start()  # restartable
    await gateway.stop()
