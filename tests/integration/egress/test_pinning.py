"""The key goes to the policy's host only: the agent's SNI and request-target cannot redirect it.

Each test is an agent's own TLS client in a real tunnel through a real gateway to a local TLS
fake upstream (what an agent's program can send, byte for byte).
"""

from __future__ import annotations

import json
from pathlib import Path

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.integration.egress.rawproxy import basic, in_tunnel
from tests.support.egress import Egress, GatewayCA, build_gateway, make_config
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.tlsca import TestCA

BODY = json.dumps({"model": "claude-test", "max_tokens": 5, "messages": []}).encode()


def post(target: str, host: str = "api.anthropic.com") -> bytes:
    head = (
        f"POST {target} HTTP/1.1\r\nHost: {host}\r\ncontent-type: application/json\r\n"
        f"x-api-key: placeholder\r\ncontent-length: {len(BODY)}\r\n\r\n"
    )
    return head.encode() + BODY


async def test_an_honest_tunnel_gets_the_key_injected(egress: Egress) -> None:
    r = await in_tunnel(
        egress.port, "api.anthropic.com:443", basic("inv-1", egress.token()),
        sni="api.anthropic.com", cafile=str(egress.bundle), request=post("/v1/messages"),
    )  # fmt: skip
    assert r.status == 200, r.body
    assert egress.fake.requests[-1].headers["x-api-key"] == egress.real_key


async def test_an_sni_of_another_host_gets_a_403_and_that_host_never_sees_the_key(
    tmp_path: Path, test_ca: TestCA, gateway_ca: GatewayCA, real_key: str
) -> None:
    # evil.test's server sits at the policy host's address (a shared front, a poisoned resolver):
    # before, the gateway verified it as the SNI the agent chose and sent it the key.
    async with FakeAnthropic(test_ca.issue(["evil.test"], name="evil")) as evil:
        state = tmp_path / "state"
        gateway = build_gateway(state, evil, test_ca, real_key, make_config(), InMemorySpanExporter(), gateway_ca)
        await gateway.start()
        egress = Egress(gateway, evil, InMemorySpanExporter(), state, real_key)
        try:
            r = await in_tunnel(
                egress.port, "api.anthropic.com:443", basic("inv-1", egress.token()),
                sni="evil.test", cafile=str(egress.bundle), request=post("/v1/messages"),
            )  # fmt: skip
            honest = await in_tunnel(
                egress.port, "api.anthropic.com:443", basic("inv-2", egress.token("inv-2")),
                sni="api.anthropic.com", cafile=str(egress.bundle), request=post("/v1/messages"),
            )  # fmt: skip
        finally:
            await gateway.stop()
    assert r.status == 403
    error = r.json()["error"]
    assert error["type"] == "egress_denied"
    assert "the TLS server name evil.test does not match the CONNECT target api.anthropic.com" in error["message"]
    # with the SNI it should have, the upstream is verified as api.anthropic.com: it is not
    assert honest.status == 502
    assert real_key.encode() not in r.body + honest.body
    assert evil.requests == []


async def test_an_absolute_form_target_naming_another_host_gets_a_403_and_sends_nothing(egress: Egress) -> None:
    r = await in_tunnel(
        egress.port, "api.anthropic.com:443", basic("inv-1", egress.token()),
        sni="api.anthropic.com", cafile=str(egress.bundle), request=post("https://evil.example/v1/messages"),
    )  # fmt: skip
    assert r.status == 403
    error = r.json()["error"]
    assert "the request-target names evil.example, not the CONNECT target api.anthropic.com" in error["message"]
    assert egress.fake.requests == []
    assert egress.real_key.encode() not in r.body


async def test_an_absolute_form_target_naming_the_tunnel_host_goes_upstream_in_origin_form(egress: Egress) -> None:
    r = await in_tunnel(
        egress.port, "api.anthropic.com:443", basic("inv-1", egress.token()),
        sni="api.anthropic.com", cafile=str(egress.bundle),
        request=post("https://api.anthropic.com/v1/messages?beta=true"),
    )  # fmt: skip
    assert r.status == 200, r.body
    assert egress.fake.requests[-1].target == "/v1/messages?beta=true"
    assert egress.fake.requests[-1].headers["x-api-key"] == egress.real_key
