"""A budget cannot be walked around: after its 429, no other spelling or route reaches the model.

Raw requests in a real tunnel (an HTTP client would normalise some of these paths before sending).
"""

from __future__ import annotations

import gzip
import json

import pytest

from clrk.api.egress import EgressConfig
from tests.integration.egress.rawproxy import RawResponse, basic, in_tunnel
from tests.support.egress import Egress, make_config

BODY = json.dumps({"model": "claude-test", "max_tokens": 100, "messages": []}).encode()
WALKAROUNDS = [
    "/v1/messages/batches",
    "/v1/complete",
    "//v1/messages",
    "/v1//messages",
    "/v1/%6Dessages",
    "/v1/./messages",
    "/v1/messages%3F",
    "/v1/messages/",
    "/v1/x/../messages",
    "/v1/messages%2F",
]


@pytest.fixture
def egress_config() -> EgressConfig:
    return make_config(budget_tokens=400)


async def send(egress: Egress, target: str, body: bytes = BODY, extra: str = "", method: str = "POST") -> RawResponse:
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: api.anthropic.com\r\ncontent-type: application/json\r\n"
        f"{extra}content-length: {len(body)}\r\n\r\n"
    )
    return await in_tunnel(
        egress.port, "api.anthropic.com:443", basic("inv-1", egress.token()),
        sni="api.anthropic.com", cafile=str(egress.bundle), request=head.encode() + body,
    )  # fmt: skip


async def test_after_the_budgets_429_no_other_path_reaches_the_upstream(egress: Egress) -> None:
    egress.fake.behaviour.output_tokens = 300  # one call spends most of the 400
    for _ in range(3):
        r = await send(egress, "/v1/messages?beta=true")
        if r.status == 429:
            break
    assert r.status == 429
    before = len(egress.fake.requests)
    for path in WALKAROUNDS:
        r = await send(egress, path)
        assert r.status == 403, (path, r.body)
        error = r.json()["error"]
        assert error["type"] == "egress_denied"
        assert error["path"] == path
        assert path in error["message"]
    assert len(egress.fake.requests) == before  # none of them went out, with the key or without
    assert [r.target for r in egress.fake.requests] == ["/v1/messages?beta=true"] * before


async def test_known_routes_pass(egress: Egress) -> None:
    assert (await send(egress, "/v1/messages?beta=true")).status == 200
    # not Messages routes of the fake, but passed by the gateway: the fake answers its 404
    assert (await send(egress, "/v1/messages/count_tokens")).status == 404
    assert (await send(egress, "/v1/models", b"", method="GET")).status == 404
    assert [r.path for r in egress.fake.requests] == ["/v1/messages", "/v1/messages/count_tokens", "/v1/models"]


async def test_a_compressed_model_call_is_refused_with_a_415_naming_the_header(egress: Egress) -> None:
    # A gzip body of 100 KB of prompt (25k tokens) is a few hundred bytes: it would reserve the
    # default 4096 tokens against a budget of 20k, and spend 25k.
    egress.gateway.update_config(make_config(budget_tokens=20_000))
    body = gzip.compress(json.dumps({"model": "m", "max_tokens": 1, "messages": [{"content": "a " * 50_000}]}).encode())
    r = await send(egress, "/v1/messages", body, "content-encoding: gzip\r\n")
    assert r.status == 415
    assert r.json()["error"]["type"] == "unsupported_content_encoding"
    assert "Content-Encoding 'gzip'" in r.json()["error"]["message"]
    assert egress.fake.requests == []
