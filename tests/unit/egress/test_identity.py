"""Identity addon, no sockets: who may use the proxy, and for how long."""

from __future__ import annotations

import base64
import json
import time

import pytest

from clrk.egress.identity import CLAIMS, ProxyIdentity
from clrk_runtime.protocol.keys import namespace_key
from clrk_runtime.protocol.tokens import InvalidToken, ProxyClaims, claimed_agent, sign
from tests.support.addons import addon_context, connect_flow, play, proxy_authorization, request_flow
from tests.support.egress import AGENT, TOKEN_KEY


def error_of(flow: object) -> dict[str, str]:
    response = flow.response  # type: ignore[attr-defined]
    assert response is not None
    return json.loads(response.content)["error"]  # type: ignore[no-any-return]


async def test_a_connect_without_credentials_gets_a_407_asking_for_them() -> None:
    async with addon_context(ProxyIdentity(TOKEN_KEY)) as tctx:
        flow = connect_flow("api.anthropic.com")
        await play(tctx, "http_connect", flow)
    assert flow.response is not None
    assert flow.response.status_code == 407
    assert flow.response.headers["proxy-authenticate"] == 'Basic realm="clrk-egress"'
    assert error_of(flow) == {"type": "proxy_authentication_required", "message": "missing proxy credentials"}
    assert CLAIMS not in flow.metadata


async def test_a_token_signed_with_another_key_or_expired_gets_a_407() -> None:
    async with addon_context(ProxyIdentity(b"another-key")) as tctx:
        forged = connect_flow("api.anthropic.com", authorization=proxy_authorization())
        await play(tctx, "http_connect", forged)
    async with addon_context(ProxyIdentity(TOKEN_KEY)) as tctx:
        expired = connect_flow("api.anthropic.com", authorization=proxy_authorization(ttl=-1))
        await play(tctx, "http_connect", expired)
    for flow in (forged, expired):
        assert flow.response is not None and flow.response.status_code == 407


async def test_the_tunnel_remembers_its_caller_and_the_credentials_go_no_further() -> None:
    async with addon_context(ProxyIdentity(TOKEN_KEY)) as tctx:
        connect = connect_flow("api.anthropic.com", authorization=proxy_authorization("inv-7"))
        await play(tctx, "http_connect", connect)
        assert connect.response is None
        assert "proxy-authorization" not in connect.request.headers
        inside = request_flow("api.anthropic.com", client=connect.client_conn)  # no credentials of its own
        await play(tctx, "requestheaders", inside)
    assert inside.response is None
    assert inside.metadata[CLAIMS].invocation_id == "inv-7"
    assert inside.metadata[CLAIMS].agent == AGENT


async def test_a_plain_http_request_is_authenticated_on_its_own() -> None:
    async with addon_context(ProxyIdentity(TOKEN_KEY)) as tctx:
        good = request_flow(
            "example.org", scheme="http", headers=[("proxy-authorization", proxy_authorization("inv-2"))]
        )
        bad = request_flow("example.org", scheme="http")
        await play(tctx, "requestheaders", good)
        await play(tctx, "requestheaders", bad)
    assert good.response is None and good.metadata[CLAIMS].invocation_id == "inv-2"
    assert bad.response is not None and bad.response.status_code == 407


async def test_a_revoked_invocation_loses_its_open_tunnel_and_cannot_open_another() -> None:
    identity = ProxyIdentity(TOKEN_KEY)
    async with addon_context(identity) as tctx:
        connect = connect_flow("api.anthropic.com", authorization=proxy_authorization("inv-3"))
        await play(tctx, "http_connect", connect)
        identity.revoke("inv-3", time.time() + 300)
        inside = request_flow("api.anthropic.com", client=connect.client_conn)
        await play(tctx, "requestheaders", inside)
        again = connect_flow("api.anthropic.com", authorization=proxy_authorization("inv-3"))
        await play(tctx, "http_connect", again)
    assert inside.response is not None and inside.response.status_code == 403
    assert error_of(inside)["invocationId"] == "inv-3"
    assert "invocation ended" in error_of(inside)["message"]
    assert again.response is not None and again.response.status_code == 407
    assert error_of(again)["message"] == "invocation ended"


async def test_a_token_signed_with_one_namespaces_key_is_refused_for_an_agent_of_another() -> None:
    # Whoever reads namespace a's Secret holds a's proxy-token key; with it they mint a token that
    # names b/x, an agent of namespace b.
    a_key = namespace_key(TOKEN_KEY, "proxy-token", "a")
    forged_token = sign(ProxyClaims("inv-9", "b/x", time.time() + 300), a_key)
    forged = "Basic " + base64.b64encode(f"inv-9:{forged_token}".encode()).decode()
    own_token = sign(ProxyClaims("inv-8", "a/x", time.time() + 300), a_key)
    own = "Basic " + base64.b64encode(f"inv-8:{own_token}".encode()).decode()
    async with addon_context(ProxyIdentity(TOKEN_KEY)) as tctx:
        cross = connect_flow("api.anthropic.com", authorization=forged)
        home = connect_flow("api.anthropic.com", authorization=own)
        await play(tctx, "http_connect", cross)
        await play(tctx, "http_connect", home)
    assert cross.response is not None and cross.response.status_code == 407
    assert error_of(cross)["message"] == "bad signature"
    assert CLAIMS not in cross.metadata
    assert home.response is None and home.metadata[CLAIMS].agent == "a/x"


async def test_the_platform_key_itself_signs_nothing_the_gateway_accepts() -> None:
    token = sign(ProxyClaims("inv-1", AGENT, time.time() + 300), TOKEN_KEY)
    authorization = "Basic " + base64.b64encode(f"inv-1:{token}".encode()).decode()
    async with addon_context(ProxyIdentity(TOKEN_KEY)) as tctx:
        flow = connect_flow("api.anthropic.com", authorization=authorization)
        await play(tctx, "http_connect", flow)
    assert flow.response is not None and flow.response.status_code == 407


async def test_a_token_whose_agent_has_no_namespace_gets_a_407_saying_so() -> None:
    token = sign(ProxyClaims("inv-1", "bot", time.time() + 300), TOKEN_KEY)
    authorization = "Basic " + base64.b64encode(f"inv-1:{token}".encode()).decode()
    async with addon_context(ProxyIdentity(TOKEN_KEY)) as tctx:
        flow = connect_flow("api.anthropic.com", authorization=authorization)
        await play(tctx, "http_connect", flow)
    assert flow.response is not None and flow.response.status_code == 407
    assert "namespace/name" in error_of(flow)["message"]


def test_the_claimed_agent_is_read_before_verifying_and_proves_nothing() -> None:
    token = sign(ProxyClaims("inv-1", "a/x", time.time() + 300), b"any key at all")
    assert claimed_agent(token) == "a/x"  # readable with no key: only says which key to verify with
    for malformed in ("", "no-separator", ".mac", "!!!.mac", base64.urlsafe_b64encode(b'{"a": 3}').decode() + ".m"):
        with pytest.raises(InvalidToken):
            claimed_agent(malformed)
