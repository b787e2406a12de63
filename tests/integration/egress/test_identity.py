"""Identity: every request needs the invocation's proxy credentials; 407 otherwise."""

from __future__ import annotations

import time

import pytest

from tests.integration.egress.rawproxy import basic, connect, plain_get
from tests.support.egress import Egress

TARGET = "api.anthropic.com:443"


def _assert_407(r: object) -> None:
    from tests.integration.egress.rawproxy import RawResponse

    assert isinstance(r, RawResponse)
    assert r.status == 407
    assert r.headers["proxy-authenticate"].startswith("Basic realm=")
    assert r.json()["error"]["type"] == "proxy_authentication_required"


async def test_connect_without_credentials_is_407(egress: Egress) -> None:
    _assert_407(await connect(egress.port, TARGET))


async def test_plain_http_without_credentials_is_407(egress: Egress) -> None:
    _assert_407(await plain_get(egress.port, "http://example.org/", "example.org"))


@pytest.mark.parametrize(
    ("user", "password_of", "reason"),
    [
        ("inv-1", lambda e: e.token("inv-1") + "x", "bad signature"),
        ("inv-1", lambda e: e.token("inv-1", ttl=-1), "expired"),
        ("inv-2", lambda e: e.token("inv-1"), "user name does not match"),
        ("inv-1", lambda e: "not-a-token", "malformed"),
    ],
)
async def test_invalid_credentials_are_407(egress: Egress, user: str, password_of: object, reason: str) -> None:
    assert callable(password_of)
    r = await connect(egress.port, TARGET, basic(user, password_of(egress)))
    _assert_407(r)
    assert reason in r.json()["error"]["message"]


async def test_revoked_invocation_is_407_and_its_tunnel_closes(egress: Egress) -> None:
    url = egress.proxy_url("inv-9")
    async with egress.client(url) as client:
        ok = await client.post("https://api.anthropic.com/v1/messages", json={"model": "m", "max_tokens": 5})
        assert ok.status_code == 200
        egress.gateway.revoke("inv-9")
        again = await client.post("https://api.anthropic.com/v1/messages", json={"model": "m", "max_tokens": 5})
        assert again.status_code == 403
        assert "invocation ended" in again.json()["error"]["message"]
    r = await connect(egress.port, TARGET, basic("inv-9", egress.token("inv-9")))
    _assert_407(r)
    assert "invocation ended" in r.json()["error"]["message"]


async def test_revoked_with_its_expiry_is_407_until_then(egress: Egress) -> None:
    token = egress.token("inv-10", ttl=300)
    egress.gateway.revoke("inv-10", expires_at=time.time() + 300)
    assert len(egress.gateway.identity.revocations) == 1
    r = await connect(egress.port, TARGET, basic("inv-10", token))
    _assert_407(r)
    assert "invocation ended" in r.json()["error"]["message"]


async def test_valid_credentials_open_the_tunnel(egress: Egress) -> None:
    r = await connect(egress.port, TARGET, basic("inv-1", egress.token("inv-1")))
    assert r.status == 200
