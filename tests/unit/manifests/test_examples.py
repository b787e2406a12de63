"""Every example's manifests load and compile; jq-bot compiles as the guide promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from clrk.manifests import compile_bundle, load_bundle
from clrk.manifests.compiling import KNATIVE_TIMEOUT_MARGIN_S

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.iterdir() if (p / "manifests").is_dir()))
def test_example_compiles_without_warnings(example: str) -> None:
    bundle = load_bundle([str(EXAMPLES / example / "manifests")])
    assert bundle.manifests.agents
    assert bundle.manifests.warnings == []
    assert compile_bundle(bundle)


def test_jq_bot_service() -> None:
    bundle = load_bundle([str(EXAMPLES / "jq-bot" / "manifests")])
    agent = bundle.manifests.agents[0]
    objects = compile_bundle(bundle)
    service = next(o for o in objects if o["kind"] == "Service" and "knative" in o["apiVersion"])
    template = service["spec"]["template"]
    min_scale = template["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"]
    assert min_scale == str(agent.spec.warm_pool_size)
    assert template["spec"]["timeoutSeconds"] == 100 + KNATIVE_TIMEOUT_MARGIN_S
    container = template["spec"]["containers"][0]
    assert container["args"][-1] == "/usr/local/bin/agent.sh", "entrypoint read from the Dockerfile"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert "clrk-injected-by-proxy" in env["CLRK_AGENT_ENV"]
    assert agent.spec.warm_start and env["CLRK_WARM_START"] == "true", "the guide's agent starts ahead"
    front = next(o for o in objects if o["kind"] == "Service" and o["apiVersion"] == "v1")
    assert (front["metadata"]["namespace"], front["metadata"]["name"]) == ("clrk", "clrk-default-jq-bot")
    assert front["spec"]["ports"][0]["port"] == 80
    policy = next(o for o in objects if o["kind"] == "ConfigMap" and "policy" in o["metadata"]["name"])
    assert "anthropic-credentials" in policy["data"]["config.json"]
