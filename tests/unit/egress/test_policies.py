"""Pure parts of identity, allow-list, injection, secrets and settings."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pydantic import SecretStr

from clrk.api.egress import EgressConfig, Injection, SecretRef
from clrk.egress.allowlist import check_destination, host_header_matches, is_internal_host
from clrk.egress.identity import parse_proxy_authorization
from clrk.egress.injection import injection_for
from clrk.egress.secrets import DirectorySecrets, parse_secret_spec, secrets_from_specs
from clrk.egress.settings import EgressSettings, parse_upstreams
from clrk.errors import EgressPolicyError


def test_proxy_authorization() -> None:
    value = "Basic " + base64.b64encode(b"inv:tok.en:x").decode()
    assert parse_proxy_authorization(value) == ("inv", "tok.en:x")
    assert parse_proxy_authorization("Bearer x") is None
    assert parse_proxy_authorization("Basic !!!") is None
    assert parse_proxy_authorization("Basic " + base64.b64encode(b"nocolon").decode()) is None


@pytest.mark.parametrize(
    ("host", "port", "allow", "ok"),
    [
        ("api.anthropic.com", 443, ("api.anthropic.com",), True),
        ("API.anthropic.com.", 443, ("api.anthropic.com",), True),
        ("evil.com", 443, ("api.anthropic.com",), False),
        ("a.example.com", 443, ("*.example.com",), True),
        ("example.com", 443, ("*.example.com",), False),
        ("api.anthropic.com", 8443, ("api.anthropic.com:443",), False),
        ("127.0.0.1", 80, ("*.example.com",), False),
        ("127.0.0.1", 80, ("127.0.0.1",), True),
        ("10.1.2.3", 443, (), False),
        ("169.254.169.254", 80, (), False),
        ("::ffff:127.0.0.1", 80, (), False),
        ("localhost", 80, ("*.localhost",), False),
        ("localhost", 80, ("localhost",), True),
    ],
)
def test_check_destination(host: str, port: int, allow: tuple[str, ...], ok: bool) -> None:
    assert (check_destination(host, port, allow) is None) is ok


def test_internal_hosts() -> None:
    assert is_internal_host("192.168.1.1")
    assert is_internal_host("[::1]")
    assert not is_internal_host("8.8.8.8")
    assert not is_internal_host("api.anthropic.com")


@pytest.mark.parametrize(
    ("header", "mismatch"),
    [
        ("api.anthropic.com", None),
        ("api.anthropic.com:443", None),
        ("API.Anthropic.com", None),
        ("api.anthropic.com:8443", "api.anthropic.com"),
        ("example.org", "example.org"),
        (None, None),
    ],
)
def test_host_header_must_name_the_connect_target(header: str | None, mismatch: str | None) -> None:
    assert host_header_matches(header, ("api.anthropic.com", 443)) == mismatch


def test_injection_for_agent_and_host() -> None:
    inj = Injection(
        host="api.anthropic.com",
        header="x-api-key",
        secret=SecretRef(name="a", key="k"),
        agents=("ns/a",),
    )
    config = EgressConfig(injections=(inj,))
    assert injection_for(config, "API.anthropic.com", "ns/a") is inj
    assert injection_for(config, "api.anthropic.com", "ns/b") is None
    assert injection_for(config, "other.com", "ns/a") is None


def test_secret_specs() -> None:
    assert parse_secret_spec("anthropic=ANTHROPIC_API_KEY:api-key") == (
        "anthropic",
        "ANTHROPIC_API_KEY",
        "api-key",
    )
    with pytest.raises(EgressPolicyError, match="NAME=ENVVAR:KEY"):
        parse_secret_spec("nonsense")
    s = secrets_from_specs(["anthropic=K:api-key"], {"K": "sk-secret-value"})
    assert s.get(SecretRef(name="anthropic", key="api-key")) == "sk-secret-value"
    assert "sk-secret-value" not in repr(s)
    with pytest.raises(EgressPolicyError, match="environment variable K is not set"):
        secrets_from_specs(["anthropic=K:api-key"], {})


def test_directory_secrets(tmp_path: Path) -> None:
    (tmp_path / "anthropic").mkdir()
    (tmp_path / "anthropic" / "api-key").write_text("sk-file\n")
    d = DirectorySecrets(tmp_path)
    assert d.get(SecretRef(name="anthropic", key="api-key")) == "sk-file"
    assert d.get(SecretRef(name="anthropic", key="missing")) is None
    assert d.get(SecretRef(name="..", key="etc")) is None


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLRK_EGRESS_UPSTREAMS", "api.anthropic.com:443=127.0.0.1:9443, a.b:80=127.0.0.1:81")
    monkeypatch.setenv("CLRK_EGRESS_UPSTREAM_CA", str(tmp_path / "ca.pem"))
    monkeypatch.setenv("CLRK_STATE_DIR", str(tmp_path))
    s = EgressSettings()
    assert s.upstreams() == {
        ("api.anthropic.com", 443): ("127.0.0.1", 9443),
        ("a.b", 80): ("127.0.0.1", 81),
    }
    assert s.egress_upstream_ca == tmp_path / "ca.pem"
    assert s.egress_dir == tmp_path / "egress"
    with pytest.raises(EgressPolicyError, match="no proxy token key"):
        s.token_key()


def test_bad_upstream_spec() -> None:
    with pytest.raises(EgressPolicyError, match="HOST:PORT=ADDR:PORT"):
        parse_upstreams(["api.anthropic.com:443"])
    with pytest.raises(EgressPolicyError, match="HOST:PORT"):
        parse_upstreams(["api.anthropic.com=127.0.0.1:1"])


def test_an_empty_platform_key_is_refused_at_the_edge(tmp_path: Path) -> None:
    empty = tmp_path / "key"
    empty.write_text("\n")
    with pytest.raises(EgressPolicyError, match="the proxy token key is empty"):
        EgressSettings(egress_token_key_file=empty).token_key()
    assert EgressSettings(egress_token_key=SecretStr(" k \n")).token_key() == b"k"
