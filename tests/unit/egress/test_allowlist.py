"""Allow-list addon, no sockets: each agent reaches its hosts, and a 403 names what it may not."""

from __future__ import annotations

import json

import pytest
from mitmproxy import connection, http
from mitmproxy.proxy import server_hooks

from clrk.api.egress import AgentEgress, EgressConfig
from clrk.egress.addresses import check_addresses
from clrk.egress.allowlist import AllowList
from tests.support.addons import addon_context, connect_flow, identified, play, request_flow
from tests.support.egress import AGENT, make_config


async def public(host: str, port: int) -> list[str]:
    """A resolver for the fast tier: every name is a public address (documentation range)."""
    return ["198.51.100.7"]


def allow_list(config: EgressConfig) -> AllowList:
    return AllowList(config, resolver=public)


def refusal(flow: http.HTTPFlow) -> dict[str, str]:
    assert flow.response is not None
    assert flow.response.status_code == 403
    return json.loads(flow.response.content or b"")["error"]  # type: ignore[no-any-return]


async def test_a_connect_to_an_unlisted_host_gets_a_403_naming_host_and_agent() -> None:
    async with addon_context(allow_list(make_config())) as tctx:
        flow = identified(connect_flow("example.com"), "inv-1")
        await play(tctx, "http_connect", flow)
    error = refusal(flow)
    assert error["type"] == "egress_denied"
    assert error["host"] == "example.com:443"
    assert error["agent"] == AGENT
    assert error["invocationId"] == "inv-1"
    assert error["message"] == (
        f"egress to example.com:443 is not allowed for agent {AGENT}: host not in the agent's allow-list"
    )


async def test_a_listed_host_passes_and_its_tunnel_serves_only_that_host() -> None:
    async with addon_context(allow_list(make_config())) as tctx:
        connect = identified(connect_flow("api.anthropic.com"))
        await play(tctx, "http_connect", connect)
        assert connect.response is None
        good = identified(request_flow("api.anthropic.com", client=connect.client_conn))
        await play(tctx, "requestheaders", good)
        smuggled = identified(request_flow("api.anthropic.com", client=connect.client_conn))
        smuggled.request.headers["host"] = "evil.example"
        await play(tctx, "requestheaders", smuggled)
    assert good.response is None
    error = refusal(smuggled)
    assert error["host"] == "evil.example:443"
    assert "Host does not match the CONNECT target api.anthropic.com" in error["message"]


async def test_internal_addresses_pass_only_when_listed_exactly() -> None:
    config = EgressConfig(agents={AGENT: AgentEgress(allow=("*.internal", "10.0.0.7:8080"))})
    async with addon_context(allow_list(config)) as tctx:
        loopback = identified(connect_flow("127.0.0.1", 8080))
        listed = identified(request_flow("10.0.0.7", scheme="http", port=8080))
        await play(tctx, "http_connect", loopback)
        await play(tctx, "requestheaders", listed)
    assert "internal addresses must be listed explicitly" in refusal(loopback)["message"]
    assert listed.response is None


async def test_an_unknown_agent_or_a_flow_without_identity_is_refused() -> None:
    async with addon_context(allow_list(make_config())) as tctx:
        stranger = identified(connect_flow("api.anthropic.com"), agent="default/stranger")
        anonymous = connect_flow("api.anthropic.com")
        await play(tctx, "http_connect", stranger)
        await play(tctx, "http_connect", anonymous)
    assert "unknown agent" in refusal(stranger)["message"]
    assert "no identity" in refusal(anonymous)["message"]


async def test_a_reloaded_config_applies_to_the_next_request_of_an_open_tunnel() -> None:
    allow = allow_list(make_config())
    async with addon_context(allow) as tctx:
        connect = identified(connect_flow("api.anthropic.com"))
        await play(tctx, "http_connect", connect)
        allow.config = EgressConfig(agents={AGENT: AgentEgress(allow=())})  # what update_config does
        inside = identified(request_flow("api.anthropic.com", client=connect.client_conn))
        await play(tctx, "requestheaders", inside)
    assert refusal(inside)["host"] == "api.anthropic.com:443"


@pytest.mark.parametrize(
    ("host", "port", "allow", "addresses", "ok"),
    [
        ("api.anthropic.com", 443, ("api.anthropic.com",), ["160.79.104.10"], True),
        ("api.anthropic.com", 22, ("api.anthropic.com",), ["160.79.104.10"], True),  # public: the entry's ports
        ("api.anthropic.com", 443, ("api.anthropic.com",), ["127.0.0.1"], True),  # its own port
        ("api.anthropic.com", 22, ("api.anthropic.com",), ["127.0.0.1"], False),
        ("api.anthropic.com", 6379, ("api.anthropic.com",), ["160.79.104.10", "10.0.0.3"], False),
        ("db.internal.test", 5432, ("db.internal.test:5432",), ["10.0.0.3"], True),
        ("db.internal.test", 443, ("db.internal.test:5432",), ["10.0.0.3"], False),
        ("a.example.com", 443, ("*.example.com",), ["127.0.0.1"], False),  # a wildcard never reaches inside
        ("localhost", 80, ("localhost",), ["127.0.0.1"], True),  # listed as internal, exactly
    ],
)
def test_check_addresses(host: str, port: int, allow: tuple[str, ...], addresses: list[str], ok: bool) -> None:
    assert (check_addresses(host, port, allow, addresses) is None) is ok


async def test_a_name_resolving_to_loopback_is_refused_off_its_port_and_dialled_where_checked() -> None:
    async def loopback(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    allow = AllowList(make_config(), resolver=loopback)
    async with addon_context(allow) as tctx:
        other_port = identified(connect_flow("api.anthropic.com", 22))
        await play(tctx, "http_connect", other_port)
        own_port = identified(connect_flow("api.anthropic.com", 443))
        await play(tctx, "http_connect", own_port)
        server = connection.Server(address=("api.anthropic.com", 443))
        data = server_hooks.ServerConnectionHookData(server=server, client=own_port.client_conn)
        await play(tctx, "server_connect", data)
        dialled = server.address
        await play(tctx, "server_connected", data)
    assert "resolves to the internal address 127.0.0.1" in refusal(other_port)["message"]
    assert own_port.response is None
    assert dialled == ("127.0.0.1", 443)  # the address checked, whatever the name says later
    assert server.address == ("api.anthropic.com", 443)  # and the name again once connected
