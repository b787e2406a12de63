"""Fixtures for the egress gateway: a test CA, the fake Anthropic upstream, a running gateway.

Everything listens on 127.0.0.1, port 0. The gateway reaches the fake through the upstream seam
(``api.anthropic.com:443`` → the fake's port) with TLS verified against ``api.anthropic.com``.
"""

from __future__ import annotations

import secrets
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clrk.egress.config import AgentEgress, EgressConfig, Injection, SecretRef
from clrk.egress.gateway import EgressGateway
from clrk.egress.secrets import StaticSecrets
from clrk.egress.settings import EgressSettings
from clrk_runtime.proxytokens import ProxyClaims, sign
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.tlsca import Leaf, TestCA

AGENT = "default/bot"
TOKEN_KEY = b"egress-test-shared-key"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA.create(tmp_path_factory.mktemp("ca"))


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


def make_config(budget_tokens: int | None = None, window: float = 3600.0) -> EgressConfig:
    from clrk.egress.config import Budget

    budget = Budget(tokens=budget_tokens, window_seconds=window) if budget_tokens else None
    return EgressConfig(
        agents={
            AGENT: AgentEgress(allow=("api.anthropic.com",), budget=budget),
            "default/other": AgentEgress(allow=("example.org",)),
        },
        injections=(
            Injection(
                host="api.anthropic.com",
                header="x-api-key",
                secret=SecretRef(name="anthropic", key="api-key"),
                agents=(AGENT,),
            ),
        ),
    )


@dataclass
class Egress:
    """A running gateway and what tests need around it."""

    gateway: EgressGateway
    fake: FakeAnthropic
    spans: InMemorySpanExporter
    state_dir: Path
    real_key: str

    @property
    def port(self) -> int:
        assert self.gateway.port is not None
        return self.gateway.port

    @property
    def bundle(self) -> Path:
        assert self.gateway.ca is not None
        return self.gateway.ca.bundle

    def token(self, invocation_id: str = "inv-1", agent: str = AGENT, ttl: float = 300.0) -> str:
        claims = ProxyClaims(invocation_id, agent, time.time() + ttl, TRACEPARENT)
        return sign(claims, TOKEN_KEY)

    def proxy_url(self, invocation_id: str = "inv-1", agent: str = AGENT, ttl: float = 300.0) -> str:
        return f"http://{invocation_id}:{self.token(invocation_id, agent, ttl)}@127.0.0.1:{self.port}"

    def client(self, proxy: str | None = None, **kwargs: object) -> httpx.AsyncClient:
        ctx = ssl.create_default_context(cafile=str(self.bundle))
        return httpx.AsyncClient(
            proxy=proxy or self.proxy_url(),
            verify=ctx,
            timeout=10.0,
            **kwargs,  # type: ignore[arg-type]
        )


def build_gateway(
    state_dir: Path,
    fake: FakeAnthropic,
    test_ca: TestCA,
    real_key: str,
    config: EgressConfig,
    spans: InMemorySpanExporter,
) -> EgressGateway:
    settings = EgressSettings(
        state_dir=state_dir,
        egress_listen_port=0,
        egress_upstreams=[f"api.anthropic.com:443={fake.address}"],
        egress_upstream_ca=test_ca.cert_path,
    )
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return EgressGateway(
        settings,
        config,
        StaticSecrets({("anthropic", "api-key"): real_key}),
        token_key=TOKEN_KEY,
        tracer_provider=provider,
    )


@pytest.fixture
def egress_config() -> EgressConfig:
    return make_config()


@pytest.fixture
async def egress(
    tmp_path: Path,
    fake_anthropic: FakeAnthropic,
    test_ca: TestCA,
    real_key: str,
    egress_config: EgressConfig,
) -> AsyncIterator[Egress]:
    spans = InMemorySpanExporter()
    state = tmp_path / "state"
    gateway = build_gateway(state, fake_anthropic, test_ca, real_key, egress_config, spans)
    await gateway.start()
    try:
        yield Egress(gateway, fake_anthropic, spans, state, real_key)
    finally:
        await gateway.stop()
