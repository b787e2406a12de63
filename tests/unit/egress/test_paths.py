"""Model paths, no sockets: only canonical, known routes go to a model host."""

from __future__ import annotations

import json

import pytest

from clrk.api.egress import EgressConfig, Injection, SecretRef
from clrk.egress.paths import ModelPaths, check_path, model_hosts
from tests.support.addons import addon_context, identified, play, request_flow
from tests.support.egress import make_config


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("POST", "/v1/messages"),
        ("POST", "/v1/messages?beta=true"),
        ("POST", "/v1/messages/count_tokens"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models?limit=20"),
        ("GET", "/v1/models/claude-sonnet-4-5"),
    ],
)
def test_known_routes_pass(method: str, target: str) -> None:
    assert check_path(method, target) is None


@pytest.mark.parametrize(
    ("method", "target", "reason"),
    [
        ("POST", "/v1/messages/batches", "is not a model route"),
        ("POST", "/v1/complete", "is not a model route"),
        ("GET", "/v1/messages", "is not a model route"),
        ("POST", "/api/event_logging/batch", "is not a model route"),
        ("POST", "//v1/messages", "empty segment"),
        ("POST", "/v1//messages", "empty segment"),
        ("POST", "/v1/messages/", "empty segment"),
        ("POST", "/v1/%6Dessages", "percent-encoded"),
        ("POST", "/v1/messages%3F", "percent-encoded"),
        ("POST", "/v1%2Fmessages", "percent-encoded"),
        ("POST", "/v1/./messages", "dot segment"),
        ("POST", "/v1/x/../messages", "dot segment"),
        ("POST", "/v1/messages;x", "characters outside"),
        ("POST", "/v1\\messages", "characters outside"),
        ("POST", "https://api.anthropic.com/v1/messages", "not absolute"),
        ("GET", "/v1/models/..", "dot segment"),
    ],
)
def test_other_routes_and_non_canonical_spellings_are_refused(method: str, target: str, reason: str) -> None:
    refused = check_path(method, target)
    assert refused is not None and reason in refused


def test_model_hosts_are_the_injection_hosts_and_anthropic() -> None:
    config = EgressConfig(
        injections=(
            Injection(host="LLM.example.", header="authorization", secret=SecretRef(name="s", key="k"), agents=()),
        )
    )
    assert model_hosts(config) == {"api.anthropic.com", "llm.example"}


async def test_a_refusal_is_a_403_naming_the_path_and_other_hosts_are_not_checked() -> None:
    async with addon_context(ModelPaths(make_config())) as tctx:
        batches = identified(request_flow("api.anthropic.com", path="/v1/messages/batches", method="POST"))
        elsewhere = identified(request_flow("example.org", path="/v1//anything", method="POST"))
        await play(tctx, "requestheaders", batches)
        await play(tctx, "requestheaders", elsewhere)
    assert batches.response is not None and batches.response.status_code == 403
    error = json.loads(batches.response.content or b"")["error"]
    assert error["type"] == "egress_denied"
    assert error["path"] == "/v1/messages/batches"
    assert elsewhere.response is None
