"""Upstream seam addon, no sockets: dial another address, still verify TLS against the host."""

from __future__ import annotations

from mitmproxy import connection
from mitmproxy.proxy import server_hooks
from mitmproxy.test import tflow

from clrk.egress.upstreams import UpstreamRedirect
from tests.support.addons import addon_context, play

FAKE = ("127.0.0.1", 8443)


def server_for(host: str, port: int = 443) -> server_hooks.ServerConnectionHookData:
    server = tflow.tserver_conn()
    server.address, server.sni = (host, port), None
    return server_hooks.ServerConnectionHookData(server=server, client=tflow.tclient_conn())


async def test_a_mapped_host_is_dialled_at_its_address_with_its_own_name_for_tls() -> None:
    async with addon_context(UpstreamRedirect({("api.anthropic.com", 443): FAKE})) as tctx:
        data = server_for("API.anthropic.com")
        await play(tctx, "server_connect", data)
        assert data.server.address == FAKE
        assert data.server.sni == "api.anthropic.com"  # the certificate is checked against this
        data.server.state = connection.ConnectionState.OPEN
        await play(tctx, "server_connected", data)
    # the name is back, so mitmproxy reuses this connection for api.anthropic.com
    assert data.server.address == ("api.anthropic.com", 443)


async def test_a_failed_dial_gets_its_name_back_too() -> None:
    async with addon_context(UpstreamRedirect({("api.anthropic.com", 443): FAKE})) as tctx:
        data = server_for("api.anthropic.com")
        await play(tctx, "server_connect", data)
        await play(tctx, "server_connect_error", data)
    assert data.server.address == ("api.anthropic.com", 443)


async def test_other_hosts_and_ports_are_dialled_as_asked() -> None:
    async with addon_context(UpstreamRedirect({("api.anthropic.com", 443): FAKE})) as tctx:
        other_host, other_port = server_for("example.org"), server_for("api.anthropic.com", 8443)
        await play(tctx, "server_connect", other_host)
        await play(tctx, "server_connect", other_port)
    assert other_host.server.address == ("example.org", 443)
    assert other_port.server.address == ("api.anthropic.com", 8443)
    assert other_host.server.sni is None
