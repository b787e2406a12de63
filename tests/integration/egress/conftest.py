"""Fixtures for the egress gateway: a test CA, the fake Anthropic upstream, a running gateway.

Everything listens on 127.0.0.1, port 0. The gateway reaches the fake through the upstream seam
(``api.anthropic.com:443`` → the fake's port) with TLS verified against ``api.anthropic.com``.
What the fixtures build with (and test modules import) is in :mod:`tests.support.egress`.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clrk.api.egress import EgressConfig
from tests.support.egress import Egress, GatewayCA, build_gateway, make_config
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.tlsca import Leaf, TestCA


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """The CA of the fake upstream's certificate (what the gateway verifies upstreams against)."""
    return TestCA.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def gateway_ca(tmp_path_factory: pytest.TempPathFactory) -> GatewayCA:
    """The gateways' own CA (what agents trust), made once and seeded into each state dir."""
    return GatewayCA.create(tmp_path_factory.mktemp("gateway-ca"))


@pytest.fixture(scope="session")
def anthropic_leaf(test_ca: TestCA) -> Leaf:
    return test_ca.issue(["api.anthropic.com"])


@pytest.fixture(scope="session")
def real_key() -> str:
    return "sk-ant-real-" + secrets.token_hex(16)


@pytest.fixture
async def fake_anthropic(anthropic_leaf: Leaf) -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(anthropic_leaf) as fake:
        yield fake


@pytest.fixture
def egress_config() -> EgressConfig:
    return make_config()


@pytest.fixture
async def egress(
    tmp_path: Path,
    fake_anthropic: FakeAnthropic,
    test_ca: TestCA,
    gateway_ca: GatewayCA,
    real_key: str,
    egress_config: EgressConfig,
) -> AsyncIterator[Egress]:
    spans = InMemorySpanExporter()
    state = tmp_path / "state"
    gateway = build_gateway(state, fake_anthropic, test_ca, real_key, egress_config, spans, gateway_ca)
    await gateway.start()
    try:
        yield Egress(gateway, fake_anthropic, spans, state, real_key)
    finally:
        await gateway.stop()
