"""Every image the project ships, built here from its Dockerfile and run.

Offline, on the local Debian trixie base: the platform images install the pinned wheels from a
wheelhouse the host made (WHEELHOUSE), and the agent images take the Claude CLI from the pinned
claude-agent-sdk wheel placed in their build context (CLAUDE_WHEEL), checked against the same
SHA-256 as the download real builds make. The templates are built as a user builds a fork: after
``clrk new``. (The runtime image has its own module, test_runtime_image.py.)
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from clrk import __version__
from tests.support.podman import podman

pytestmark = pytest.mark.containers

CLAUDE_VERSION = "2.1.331 (Claude Code)"
"""What the pinned CLI (claude-agent-sdk 0.2.188's) says to ``--version``."""
AGENTS = {
    "examples/jq-bot": ("agent.sh", ["bash", "jq"]),
    "templates/jq-bot": ("agent.sh", ["bash", "jq"]),
    "templates/shell": ("agent.sh", ["bash", "jq"]),
    "templates/python": ("agent.py", ["python3"]),
    "templates/node": ("agent.mjs", ["node"]),
    "templates/claude-stream": ("agent.sh", ["bash", "jq"]),
}
"""Each agent image: its entrypoint (in /usr/local/bin) and the tools it runs besides claude."""


def run(image: str, *args: str, entrypoint: str | None = None, stdin: str | None = None, check: bool = True) -> str:
    """Output of a throwaway container of ``image``, run as its image says (its user), with a
    read-only root filesystem and no network, as the platform runs them; AssertionError unless
    it exits 0 (when ``check``)."""
    argv = ["run", "--rm", "--read-only", "--network", "none"]
    argv += ["--interactive"] if stdin is not None else []
    argv += ["--entrypoint", entrypoint] if entrypoint else []
    return podman(*argv, image, *args, input=stdin, check=check).stdout


@pytest.mark.parametrize(("component", "usage"), [("ingress", "clrk ingress"), ("egress", "clrk egress")])
def test_the_platform_images_run_their_entrypoints(request: pytest.FixtureRequest, component: str, usage: str) -> None:
    image = request.getfixturevalue(f"{component}_image")
    assert f"Usage: {usage} [OPTIONS]" in run(image, "--help")
    assert run(image, "version", entrypoint="clrk").strip().endswith(__version__)
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == "65532:65532", "the Deployments run them as uid 65532"


def test_the_operator_runs_from_the_ingress_image(ingress_image: str) -> None:
    """platform/config/operator.yaml runs ``clrk operator`` in the ingress image."""
    assert "Usage: clrk operator [OPTIONS]" in run(ingress_image, "operator", "--help", entrypoint="clrk")


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_an_agent_image_holds_what_its_agent_needs(agent_image: Callable[[str], str], agent: str) -> None:
    image = agent_image(agent)
    entrypoint, tools = AGENTS[agent]
    assert run(image, "--version", entrypoint="claude").strip() == CLAUDE_VERSION
    for tool in tools:
        assert run(image, "-c", f"command -v {tool}", entrypoint="sh").strip(), f"{agent}: no {tool}"
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert config["Entrypoint"] == [f"/usr/local/bin/{entrypoint}"]
    # Its entrypoint runs: a request it cannot serve is answered without calling the model (the
    # example exits 1 then, the templates 0 with a status for the shim).
    env = "CLRK_METADATA_RESPONSE_HEADERS=/dev/null"
    out = run(image, env, f"/usr/local/bin/{entrypoint}", entrypoint="env", stdin='{"data": {}}', check=False)
    assert json.loads(out.splitlines()[-1])["error"]["type"] == "bad_input", out
