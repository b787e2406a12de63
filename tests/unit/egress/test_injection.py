"""Injection addon, no sockets: the key goes to the policy host only, and only over verified TLS."""

from __future__ import annotations

import json

import pytest

from clrk.api.egress import EgressConfig, Injection, SecretRef
from clrk.egress.injection import CredentialInjector
from clrk.egress.secrets import StaticSecrets
from tests.support.addons import addon_context, identified, messages_flow, play, request_flow
from tests.support.egress import AGENT, make_config

REAL_KEY = "sk-ant-real-0123456789"
SECRETS = StaticSecrets({("anthropic", "api-key"): REAL_KEY})
AGENT_HEADERS = [("x-api-key", "placeholder"), ("authorization", "Bearer agent"), ("cookie", "c=1")]


async def test_the_key_is_written_for_the_policy_host_and_the_agents_credentials_removed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with addon_context(CredentialInjector(make_config(), SECRETS)) as tctx:
        flow = identified(messages_flow(headers=AGENT_HEADERS))
        await play(tctx, "request", flow)
    assert flow.response is None
    assert flow.request.headers.get_all("x-api-key") == [REAL_KEY]
    assert "authorization" not in flow.request.headers
    assert "cookie" not in flow.request.headers
    assert REAL_KEY not in caplog.text


async def test_no_key_unless_upstream_tls_is_verified(caplog: pytest.LogCaptureFixture) -> None:
    async with addon_context(CredentialInjector(make_config(), SECRETS)) as tctx:
        plain = identified(request_flow("api.anthropic.com", scheme="http", headers=AGENT_HEADERS))
        await play(tctx, "request", plain)
        tctx.options.update(ssl_insecure=True)
        insecure = identified(messages_flow(headers=AGENT_HEADERS))
        await play(tctx, "request", insecure)
    for flow in (plain, insecure):
        assert flow.response is None
        assert "x-api-key" not in flow.request.headers  # neither ours nor the agent's
        assert "authorization" not in flow.request.headers
    assert "upstream TLS is not verified" in caplog.text


async def test_other_hosts_and_other_agents_get_no_key() -> None:
    async with addon_context(CredentialInjector(make_config(), SECRETS)) as tctx:
        elsewhere = identified(request_flow("example.org", headers=AGENT_HEADERS))
        other_agent = identified(messages_flow(headers=AGENT_HEADERS), agent="default/other")
        await play(tctx, "request", elsewhere)
        await play(tctx, "request", other_agent)
    for flow in (elsewhere, other_agent):
        assert flow.response is None
        assert flow.request.headers["x-api-key"] == "placeholder"  # untouched: not ours to change


async def test_the_policy_format_builds_the_header() -> None:
    bearer = Injection(
        host="api.anthropic.com",
        header="authorization",
        secret=SecretRef(name="anthropic", key="api-key"),
        format="Bearer {value}",
        agents=(AGENT,),
    )
    async with addon_context(CredentialInjector(EgressConfig(injections=(bearer,)), SECRETS)) as tctx:
        flow = identified(messages_flow(headers=AGENT_HEADERS))
        await play(tctx, "request", flow)
    assert flow.request.headers["authorization"] == f"Bearer {REAL_KEY}"
    assert "x-api-key" not in flow.request.headers


async def test_a_missing_secret_gets_a_403_naming_it_not_a_request_without_a_key() -> None:
    async with addon_context(CredentialInjector(make_config(), StaticSecrets())) as tctx:
        flow = identified(messages_flow(headers=AGENT_HEADERS), "inv-5")
        await play(tctx, "request", flow)
    assert flow.response is not None
    assert flow.response.status_code == 403
    error = json.loads(flow.response.content or b"")["error"]
    assert error["message"].endswith("secret anthropic/api-key is not available")
    assert error["invocationId"] == "inv-5"


async def test_no_key_when_the_sni_or_the_request_target_names_another_host() -> None:
    async with addon_context(CredentialInjector(make_config(), SECRETS)) as tctx:
        other_sni = identified(messages_flow(headers=AGENT_HEADERS))
        other_sni.client_conn.sni = "evil.test"
        other_target = identified(messages_flow(headers=AGENT_HEADERS))
        other_target.request.authority = "evil.example"
        for flow in (other_sni, other_target):
            await play(tctx, "request", flow)
    for flow in (other_sni, other_target):
        assert "x-api-key" not in flow.request.headers
        assert REAL_KEY not in str(flow.request.headers)
