"""Pinning, no sockets: SNI, Host and request-target must name the tunnel's host; upstream SNI too."""

from __future__ import annotations

import json

import pytest
from mitmproxy import connection, tls
from mitmproxy.proxy import context

from clrk.egress.pinning import TunnelPinning, UpstreamNames, disagreement, name_mismatch
from tests.support.addons import addon_context, connect_flow, identified, play, request_flow

TARGET = ("api.anthropic.com", 443)


@pytest.mark.parametrize(
    ("authority", "named"),
    [
        (None, None),
        ("", None),
        ("api.anthropic.com", None),
        ("API.Anthropic.com.:443", None),
        ("api.anthropic.com:8443", "api.anthropic.com"),
        ("evil.example", "evil.example"),
        ("evil.example:443", "evil.example"),
        ("[::1]:443", "::1"),
        ("::1", "::1"),
    ],
)
def test_name_mismatch(authority: str | None, named: str | None) -> None:
    assert name_mismatch(authority, TARGET) == named


def test_disagreement_names_what_disagreed() -> None:
    agree = disagreement(TARGET, sni="api.anthropic.com", host_header="api.anthropic.com", authority="")
    assert agree is None
    sni = disagreement(TARGET, sni="evil.test", host_header="api.anthropic.com", authority="")
    assert sni == "the TLS server name evil.test does not match the CONNECT target api.anthropic.com"
    target = disagreement(TARGET, sni=None, host_header="api.anthropic.com", authority="evil.example")
    assert target == "the request-target names evil.example, not the CONNECT target api.anthropic.com"
    host = disagreement(TARGET, sni=None, host_header="evil.example", authority="")
    assert host == "Host evil.example does not match the CONNECT target api.anthropic.com"


async def test_a_tunnelled_request_with_another_sni_is_refused_and_an_agreeing_one_passes() -> None:
    async with addon_context(TunnelPinning()) as tctx:
        tunnel = identified(connect_flow("api.anthropic.com"))
        await play(tctx, "http_connect", tunnel)
        tunnel.client_conn.sni = "evil.test"
        inside = identified(request_flow("api.anthropic.com", client=tunnel.client_conn))
        await play(tctx, "requestheaders", inside)
        honest = identified(connect_flow("api.anthropic.com"))
        await play(tctx, "http_connect", honest)
        honest.client_conn.sni = "api.anthropic.com"
        passing = identified(request_flow("api.anthropic.com", client=honest.client_conn))
        passing.request.authority = "api.anthropic.com"
        await play(tctx, "requestheaders", passing)
    assert inside.response is not None and inside.response.status_code == 403
    assert "TLS server name evil.test" in json.loads(inside.response.content or b"")["error"]["message"]
    assert passing.response is None
    assert passing.request.authority == ""  # origin form upstream


async def test_a_plain_request_whose_host_header_names_another_host_is_refused() -> None:
    async with addon_context(TunnelPinning()) as tctx:
        flow = identified(request_flow("example.org", scheme="http", port=80))
        flow.request.headers["host"] = "api.anthropic.com"
        await play(tctx, "requestheaders", flow)
    assert flow.response is not None and flow.response.status_code == 403


def test_the_upstream_is_verified_as_the_host_dialled_never_the_agents_sni() -> None:
    client = connection.Client(peername=("127.0.0.1", 5555), sockname=("127.0.0.1", 8899))
    client.sni = "evil.test"
    server = connection.Server(address=("api.anthropic.com", 443))
    server.sni = "evil.test"  # what mitmproxy copies from the agent's ClientHello
    data = tls.TlsData(conn=server, context=context.Context(client, None))  # type: ignore[arg-type]
    UpstreamNames().tls_start_server(data)
    assert server.sni == "api.anthropic.com"
