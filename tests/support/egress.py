"""Building egress gateways for tests: one agent's config, a proxy client, one CA per session.

The fixtures live in ``tests/integration/egress/conftest.py``; this is what they (and the test
modules) build with. Every gateway reaches the fake Anthropic upstream through the upstream seam
(``api.anthropic.com:443`` → the fake's port), TLS verified against ``api.anthropic.com``::

    gateway = build_gateway(state, fake, test_ca, real_key, make_config(), spans, gateway_ca)
    await gateway.start()
    egress = Egress(gateway, fake, spans, state, real_key)
    async with egress.client() as client:   # HTTPS_PROXY with a signed token, trusting the bundle
        r = await client.post("https://api.anthropic.com/v1/messages", json=...)

The gateway's own CA (the one it signs intercepted certificates with) is an RSA key that takes a
while to generate: :class:`GatewayCA` makes one per session and seeds it into each gateway's
state directory, the way a cluster's init container seeds Secret ``clrk-ca-key``.
"""

from __future__ import annotations

import shutil
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clrk.api.egress import AgentEgress, Budget, EgressConfig, Injection, SecretRef
from clrk.egress.ca import CA_BASENAME, ensure_ca
from clrk.egress.gateway import EgressGateway
from clrk.egress.secrets import StaticSecrets
from clrk.egress.settings import EgressSettings
from clrk_runtime.protocol.keys import namespace_key, namespace_of
from clrk_runtime.protocol.tokens import ProxyClaims, sign
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.tlsca import TestCA

__all__ = [
    "AGENT",
    "TOKEN_KEY",
    "TRACEPARENT",
    "Egress",
    "GatewayCA",
    "build_gateway",
    "make_config",
    "shim_key",
]

AGENT = "default/bot"
"""The agent with an injection and a budget; ``default/other`` may reach only example.org."""
TOKEN_KEY = b"egress-test-shared-key"
"""The platform key the test gateways hold; shims sign with :func:`shim_key` of it."""


def shim_key(agent: str = AGENT) -> bytes:
    """The key a shim of ``agent``'s namespace signs proxy tokens with (derived from TOKEN_KEY)."""
    return namespace_key(TOKEN_KEY, "proxy-token", namespace_of(agent))


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def make_config(budget_tokens: int | None = None, window: float = 3600.0) -> EgressConfig:
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


@dataclass(frozen=True)
class GatewayCA:
    """A gateway CA made once, handed to any number of gateways through their state directory."""

    confdir: Path
    """mitmproxy's CA files, as :func:`clrk.egress.ca.ensure_ca` made them."""

    @classmethod
    def create(cls, directory: Path) -> GatewayCA:
        return cls(ensure_ca(directory).confdir)

    def seed(self, state_dir: Path) -> None:
        """Put the CA where the gateway of ``state_dir`` looks first (``<state>/egress/ca``)."""
        target = state_dir / "egress" / "ca"
        target.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name in (f"{CA_BASENAME}-ca.pem", f"{CA_BASENAME}-ca-cert.pem"):
            shutil.copyfile(self.confdir / name, target / name)
            (target / name).chmod(0o600)


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
        return sign(claims, shim_key(agent))

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
    gateway_ca: GatewayCA,
) -> EgressGateway:
    """A gateway (not started) on port 0 whose upstream is ``fake``, its CA seeded from ``gateway_ca``."""
    gateway_ca.seed(state_dir)
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
