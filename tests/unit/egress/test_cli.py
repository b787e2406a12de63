"""``clrk egress`` only adapts: its options map onto EgressSettings and the secret source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import clrk.cli.egress as cli
from clrk.api.egress import SecretRef
from clrk.egress.secrets import StaticSecrets
from clrk.errors import EgressPolicyError


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def fake_serve(settings: Any, secrets: Any, **_: Any) -> None:
        seen["settings"], seen["secrets"] = settings, secrets

    monkeypatch.setattr("clrk.egress.serving.serve", fake_serve)
    return seen


def app() -> typer.Typer:
    a = typer.Typer()
    a.command("egress")(cli.egress)
    a.command("noop")(lambda: None)
    return a


def test_options_map_onto_settings(captured: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "sk-from-env")
    result = CliRunner().invoke(
        app(),
        [
            "egress", "--config", str(tmp_path / "c.json"), "--listen", "0.0.0.0:3128",
            "--state-dir", str(tmp_path), "--secret", "anthropic=MY_KEY:api-key",
            "--egress-upstream", "api.anthropic.com:443=127.0.0.1:9443",
            "--egress-upstream", "x.y:80=127.0.0.1:81",
            "--egress-upstream-ca", str(tmp_path / "ca.pem"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    s = captured["settings"]
    assert (s.egress_listen_host, s.egress_listen_port) == ("0.0.0.0", 3128)
    assert s.state_dir == tmp_path
    assert s.egress_config_file == tmp_path / "c.json"
    assert s.upstreams()[("api.anthropic.com", 443)] == ("127.0.0.1", 9443)
    assert s.egress_upstream_ca == tmp_path / "ca.pem"
    secrets = captured["secrets"]
    assert isinstance(secrets, StaticSecrets)
    assert secrets.get(SecretRef(name="anthropic", key="api-key")) == "sk-from-env"


def test_unset_secret_env_fails_clearly(captured: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    result = CliRunner().invoke(app(), ["egress", "--secret", "anthropic=NOT_SET_ANYWHERE:api-key"])
    assert isinstance(result.exception, EgressPolicyError)
    assert "NOT_SET_ANYWHERE is not set" in str(result.exception)
    assert "settings" not in captured


def test_env_settings_apply_without_options(
    captured: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CLRK_EGRESS_UPSTREAMS", "api.anthropic.com:443=127.0.0.1:1")
    monkeypatch.setenv("CLRK_EGRESS_SECRETS_DIR", str(tmp_path))
    result = CliRunner().invoke(app(), ["egress"])
    assert result.exit_code == 0, result.output
    assert captured["settings"].upstreams() == {("api.anthropic.com", 443): ("127.0.0.1", 1)}
    assert repr(captured["secrets"]) == f"DirectorySecrets({tmp_path})"
