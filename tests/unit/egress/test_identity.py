"""Identity addon, no sockets: who may use the proxy, and for how long."""

from __future__ import annotations

import json
import time

from clrk.egress.identity import CLAIMS, ProxyIdentity
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
