"""An allowed name that resolves to loopback opens its own port there, not every loopback port.

The name ``models.internal.test`` resolves to 127.0.0.1 (the event loop's resolver answers for
it, as ``/etc/hosts`` or a private DNS zone would); a service listens on another loopback port,
as a database, an admin port or clrk's own ingress would.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clrk.api.egress import AgentEgress, EgressConfig
from tests.integration.egress.rawproxy import basic, connect
from tests.support.egress import AGENT, Egress, GatewayCA, build_gateway
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.tlsca import TestCA

NAME = "models.internal.test"


class LoopbackService:
    """A TCP service on 127.0.0.1 that counts the connections it gets."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"+OK secret service\r\n")
        await writer.drain()
        writer.close()


@pytest.fixture
async def service() -> AsyncIterator[LoopbackService]:
    svc = LoopbackService()
    server = await asyncio.start_server(svc._accept, "127.0.0.1", 0)
    svc.port = server.sockets[0].getsockname()[1]
    async with server:
        yield svc


@pytest.fixture
async def name_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if str(host).lower().rstrip(".") == NAME:
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", int(port)))]
        return await real(host, port, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)


async def gateway_allowing(
    entry: str, tmp_path: Path, fake: FakeAnthropic, test_ca: TestCA, gateway_ca: GatewayCA, real_key: str
) -> Egress:
    config = EgressConfig(agents={AGENT: AgentEgress(allow=(entry, "api.anthropic.com"))})
    state = tmp_path / "state"
    gateway = build_gateway(state, fake, test_ca, real_key, config, InMemorySpanExporter(), gateway_ca)
    await gateway.start()
    return Egress(gateway, fake, InMemorySpanExporter(), state, real_key)


async def tunnel_bytes(port: int, target: str, auth: str) -> tuple[bytes, bytes]:
    """CONNECT, then speak the service's protocol in the tunnel: (CONNECT answer, what came back)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {auth}\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        if not head.startswith(b"HTTP/1.1 200"):
            rest = await asyncio.wait_for(reader.read(4096), 5)
            return head, rest
        writer.write(b"PING\r\n")
        await writer.drain()
        return head, await asyncio.wait_for(reader.read(4096), 5)
    finally:
        writer.close()


@pytest.mark.usefixtures("name_on_loopback")
async def test_an_allowed_name_on_loopback_does_not_open_the_other_loopback_ports(
    service: LoopbackService,
    tmp_path: Path,
    fake_anthropic: FakeAnthropic,
    test_ca: TestCA,
    gateway_ca: GatewayCA,
    real_key: str,
) -> None:
    egress = await gateway_allowing(NAME, tmp_path, fake_anthropic, test_ca, gateway_ca, real_key)
    try:
        head, rest = await tunnel_bytes(egress.port, f"{NAME}:{service.port}", basic("inv-1", egress.token()))
        async with egress.client() as client:  # the gateway still serves everyone else
            ok = await client.post("https://api.anthropic.com/v1/messages", json={"model": "m", "max_tokens": 5})
    finally:
        await egress.gateway.stop()
    assert head.startswith(b"HTTP/1.1 403"), head
    assert b"resolves to the internal address 127.0.0.1" in rest
    assert b"secret service" not in rest
    assert service.connections == 0
    assert ok.status_code == 200


@pytest.mark.usefixtures("name_on_loopback")
async def test_the_port_its_entry_states_is_open(
    tmp_path: Path, test_ca: TestCA, gateway_ca: GatewayCA, real_key: str, fake_anthropic: FakeAnthropic
) -> None:
    async with FakeAnthropic(test_ca.issue([NAME], name="internal")) as internal:
        egress = await gateway_allowing(
            f"{NAME}:{internal.port}", tmp_path, fake_anthropic, test_ca, gateway_ca, real_key
        )
        try:
            async with egress.client() as client:
                r = await client.get(f"https://{NAME}:{internal.port}/v1/models")
        finally:
            await egress.gateway.stop()
    assert r.status_code == 404  # the internal service's own answer: it was reached, verified as NAME
    assert [req.path for req in internal.requests] == ["/v1/models"]
    assert internal.requests[0].headers.get("x-api-key") is None


async def test_a_name_that_does_not_resolve_gets_a_502_naming_it(egress: Egress) -> None:
    egress.gateway.update_config(EgressConfig(agents={AGENT: AgentEgress(allow=("nowhere.invalid",))}))
    r = await connect(egress.port, "nowhere.invalid:443", basic("inv-1", egress.token()))
    assert r.status == 502
    assert r.json()["error"]["type"] == "egress_unresolvable"
    assert "cannot resolve nowhere.invalid" in r.json()["error"]["message"]
