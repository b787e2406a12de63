"""Every template, and the jq-bot example, starts its agent ahead of its request (warm start):
its manifest asks for it, and its entrypoint says where its start-up ends. That the entrypoints
keep the contract (a line on ``$CLRK_READY_FD``, then stdin) is run by each template's own tests
(``started``), which ``tests/integration/authoring`` runs on a fork of each."""

from __future__ import annotations

from pathlib import Path

import pytest

from clrk.authoring import available_templates, create_fork
from clrk.manifests import load_bundle

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("template", available_templates())
def test_a_forks_agent_is_started_ahead_of_its_request(template: str, tmp_path: Path) -> None:
    fork = create_fork("my-bot", template, tmp_path / "my-bot")
    (agent,) = load_bundle([str(fork.path / "manifests")]).manifests.agents
    assert agent.spec.warm_start is True
    assert agent.spec.warm_pool_size >= 1
    (entrypoint,) = [p for p in fork.path.glob("agent.*") if p.is_file()]
    assert "CLRK_READY_FD" in entrypoint.read_text()


def test_the_jq_bot_example_is_started_ahead_too() -> None:
    (agent,) = load_bundle([str(REPO / "examples" / "jq-bot" / "manifests")]).manifests.agents
    assert agent.spec.warm_start is True
    assert "CLRK_READY_FD" in (REPO / "examples" / "jq-bot" / "agent.sh").read_text()
