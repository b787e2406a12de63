"""The upstream seam still verifies TLS against the host the agent asked for."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.egress import Egress, GatewayCA, build_gateway, make_config
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.tlsca import TestCA


async def test_wrong_certificate_fails_and_no_key_is_sent(
    tmp_path: Path, test_ca: TestCA, gateway_ca: GatewayCA, real_key: str
) -> None:
    wrong = test_ca.issue(["api.example.net"], name="wrong")
    async with FakeAnthropic(wrong) as fake:
        state = tmp_path / "state"
        gw = build_gateway(state, fake, test_ca, real_key, make_config(), InMemorySpanExporter(), gateway_ca)
        await gw.start()
        egress = Egress(gw, fake, InMemorySpanExporter(), state, real_key)
        try:
            async with egress.client() as client:
                r = await client.post("https://api.anthropic.com/v1/messages", json={"model": "m", "max_tokens": 5})
            assert r.status_code == 502
            assert real_key not in r.text
        finally:
            await gw.stop()
        assert fake.requests == []


async def test_untrusted_ca_fails(tmp_path: Path, gateway_ca: GatewayCA, real_key: str, anthropic_leaf: object) -> None:
    other_ca = TestCA.create(tmp_path / "other-ca")
    leaf = other_ca.issue(["api.anthropic.com"])
    trusted = TestCA.create(tmp_path / "trusted-ca")
    async with FakeAnthropic(leaf) as fake:
        state = tmp_path / "state"
        gw = build_gateway(state, fake, trusted, real_key, make_config(), InMemorySpanExporter(), gateway_ca)
        await gw.start()
        egress = Egress(gw, fake, InMemorySpanExporter(), state, real_key)
        try:
            async with egress.client() as client:
                r = await client.post("https://api.anthropic.com/v1/messages", json={"model": "m", "max_tokens": 5})
            assert r.status_code == 502
        finally:
            await gw.stop()
        assert fake.requests == []


async def test_ca_files_and_permissions(egress: Egress) -> None:
    ca = egress.gateway.ca
    assert ca is not None
    assert (ca.confdir / "mitmproxy-ca.pem").stat().st_mode & 0o777 == 0o600
    assert ca.confdir.stat().st_mode & 0o777 == 0o700
    bundle = ca.bundle.read_text()
    assert ca.cert.read_text().strip() in bundle
    assert bundle.count("BEGIN CERTIFICATE") > 10  # the system's CAs too
    assert "PRIVATE KEY" not in bundle
    assert ca.bundle.stat().st_mode & 0o777 == 0o644
