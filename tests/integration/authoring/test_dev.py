"""The README's steps for every template: `clrk new`, then `clrk dev --apply manifests`, then
`clrk invoke NAME --verbose`, with the real Claude CLI, through the real egress gateway, to a
local fake Anthropic API over TLS."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from clrk.authoring import available_templates
from tests.support.authoring_cli import clrk
from tests.support.clrk_dev import clrk_dev
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.threaded import in_thread
from tests.support.tlsca import TestCA

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("claude", path=str(Path(sys.executable).parent)) is None, reason="no claude"),
]
BODIES = {"jq-bot": {"input": [{"name": "ada"}, {"name": "bob"}], "want": "the names"}}
ANSWERS = {"jq-bot": {"filter": "map(.name)", "output": ["ada", "bob"]}}


@pytest.fixture(scope="module")
def dev_url() -> Iterator[str]:
    # World-readable: the agent runs as an unprivileged user, and pytest's tmp_path is 0700.
    root = Path(tempfile.mkdtemp(prefix="clrk-new-dev-"))
    root.chmod(0o755)
    ca = TestCA.create(root / "ca")
    leaf = ca.issue(["api.anthropic.com"])
    args = ["--state-dir", str(root / "state")]
    for template in available_templates():
        assert clrk("new", f"new-{template}", "-t", template, "--dir", str(root / template)).exit_code == 0
        args += ["--apply", str(root / template / "manifests")]
    try:
        with in_thread(FakeAnthropic(leaf)) as fake:
            fake.behaviour.structured_output = {"filter": "map(.name)"}
            fake.behaviour.text = "Paris."
            args += ["--secret", "anthropic-credentials=ANTHROPIC_API_KEY:api-key"]
            args += ["--egress-upstream", f"api.anthropic.com:443={fake.address}"]
            args += ["--egress-upstream-ca", str(ca.cert_path)]
            env = {**os.environ, "ANTHROPIC_API_KEY": "sk-ant-test-key"}
            with clrk_dev(args, env) as running:
                yield running.url
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("template", available_templates())
def test_a_new_agent_answers_through_clrk_dev(template: str, dev_url: str) -> None:
    body = json.dumps(BODIES.get(template, {"prompt": "What is the capital of France?"}))
    ran = clrk("invoke", f"new-{template}", "--data", body, "--url", dev_url, "--verbose")
    assert ran.exit_code == 0, ran.stderr
    if template == "claude-stream":  # the CLI's events, one a line: the last is its result
        events = [json.loads(line) for line in ran.stdout.splitlines()]
        assert events[0]["type"] == "system"
        assert (events[-1]["type"], events[-1]["result"], events[-1]["is_error"]) == ("result", "Paris.", False)
    else:
        assert json.loads(ran.stdout) == ANSWERS.get(template, {"answer": "Paris."})
    assert "status: 200 OK" in ran.stderr
    assert "tokens: 11 in, 7 out (1 model call)" in ran.stderr


def test_a_new_agent_answers_bad_input_with_a_400(dev_url: str) -> None:
    ran = clrk("invoke", "new-python", "--url", dev_url)
    assert ran.exit_code == 1
    assert ran.stderr.startswith('error: bad_input: the body must be a JSON object with "prompt"')
    assert "(invocation " in ran.stderr


def test_claude_streams_each_event_as_one_line_with_follow(dev_url: str) -> None:
    body = json.dumps({"prompt": "What is the capital of France?"})
    ran = clrk("invoke", "new-claude-stream", "--follow", "--data", body, "--url", dev_url)
    assert ran.exit_code == 0, ran.stderr
    events = [json.loads(line) for line in ran.stdout.splitlines()]
    deltas = [e["event"]["delta"] for e in events if e["type"] == "stream_event" and "delta" in e["event"]]
    assert "".join(d.get("text", "") for d in deltas) == "Paris.", "the model's text, as it was generated"
    assert (events[-1]["type"], events[-1]["result"]) == ("result", "Paris.")
