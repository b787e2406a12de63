"""Warm start under a real ``clrk dev``: who a model call made before the request is counted to.

A warm-started agent calls the model through the real egress gateway (in-process, to a fake
Anthropic over TLS) twice: once while it starts, before it says it is ready, and once for its
invocation. What a user sees: the invocation's usage counts only its own call; the start-up call
is the agent's, under the start-up id the shim logs (``[default/<agent> start-up <id>]``), and
counts against the agent's token budget; the invocation's model-call span is a child of its
``clrk.invocation`` span; a connection the agent opened while it started is closed when its
request comes (a call made on it would be counted to no one, or to the wrong one); the proxy
credentials the agent held are refused once its invocation ended. An agent that cannot start
ahead still gets its requests: ``clrk dev`` falls back to starting it on request, and says so.

Order, not time: the agent's start-up runs before its request by construction (it reads stdin
only after it wrote to ``$CLRK_READY_FD``), and the test learns the start-up id from the log
line the agent's start-up stderr made.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from clrk.egress.budgets import estimate_tokens
from clrk.egress.messages import parse_request
from clrk_runtime.protocol.envelope import DEADLINE_ATTRIBUTE, INVOCATION_ATTRIBUTE, TRACE_ATTRIBUTE
from clrk_runtime.service.warming import FALLBACK_AFTER, WARM_START_PREFIX
from tests.support.clrk_dev import RunningDev, clrk_dev
from tests.support.fake_anthropic import Behaviour, FakeAnthropic
from tests.support.readable import agents_dir
from tests.support.streams import gate_dir
from tests.support.threaded import in_thread
from tests.support.tlsca import TestCA

BODY = '{"model": "claude-test", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}'
"""Every model call the test agents make (the budget below is sized by it)."""
CALL_TOKENS = Behaviour().input_tokens + Behaviour().output_tokens
"""What one call costs, as the fake answers it."""
ESTIMATE = estimate_tokens(parse_request(BODY.encode()), len(BODY))
"""What the gateway reserves for one call before it is sent on."""
BUDGET = ESTIMATE + CALL_TOKENS - 1
"""Room for the start-up call's reservation, then not for another once it cost CALL_TOKENS: the
invocation's call fits only if the start-up call was not counted to the agent."""

TASK_AGENT = """\
apiVersion: clrk.dev/v1alpha1
kind: TaskAgent
metadata:
  name: {name}
spec:
  template:
    spec:
      image: registry.example.com/{name}:1
      command: {command}
  timeout: 30s
  warmPoolSize: {warm}
  warmStart: true
  maxConcurrency: 4
{extra}---
apiVersion: clrk.dev/v1alpha1
kind: CredentialInjectionPolicy
metadata:
  name: anthropic-for-{name}
spec:
  host: api.anthropic.com
  header: x-api-key
  secretKeyRef:
    name: anthropic-credentials
    key: api-key
  agents: [{name}]
---
"""


@dataclass
class WarmDev:
    running: RunningDev
    fake: FakeAnthropic

    @property
    def url(self) -> str:
        return self.running.url

    def log_text(self) -> str:
        return self.running.log_text()

    def wait_for_log(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """The first match of ``pattern`` in the log, once there."""
        return _eventually(lambda: re.search(pattern, self.log_text()), timeout, f"{pattern!r} logged")

    def post(self, agent: str, data: dict[str, Any], **headers: str) -> httpx.Response:
        sent = {"X-Clrk-TaskAgent": f"default/{agent}", "content-type": "application/json", **headers}
        return httpx.post(self.url + "/", content=json.dumps(data).encode(), headers=sent, timeout=60)

    def spans(self, invocation_id: str) -> list[dict[str, Any]]:
        answer = httpx.get(self.url + "/_clrk/traces", params={"invocation": invocation_id}, timeout=10)
        assert answer.status_code == 200, answer.text
        spans: list[dict[str, Any]] = answer.json()["spans"]
        return spans


def _eventually[T](probe: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while (found := probe()) is None or found is False:
        assert time.monotonic() < deadline, f"not so within {timeout:g}s: {what}"
        time.sleep(0.05)
    return found


@pytest.fixture(scope="module")
def dev() -> Iterator[WarmDev]:
    """``clrk dev`` serving three warm-started agents (tests/agents/warm_*): ``warm-model`` (two
    warm sandboxes: one is ready for the next test while the one a test used is replaced),
    ``warm-budget`` (its budget BUDGET tokens an hour) and ``warm-broken``."""
    agents = agents_dir()
    with gate_dir() as root:
        ca = TestCA.create(root / "ca")
        manifests = root / "manifests"
        manifests.mkdir()
        budget = f"  budget:\n    tokens: {BUDGET}\n"
        (manifests / "agents.yaml").write_text(
            "".join(
                [
                    _agent("warm-model", ["/usr/bin/python3", "-I", str(agents / "warm_model.py"), BODY], warm=2),
                    _agent("warm-budget", ["sh", str(agents / "warm_budget.sh"), BODY], budget),
                    _agent("warm-broken", ["sh", str(agents / "warm_broken.sh")]),
                ]
            )
        )
        key = "sk-ant-warm-" + secrets.token_hex(20)
        with in_thread(FakeAnthropic(ca.issue(["api.anthropic.com"]))) as fake:
            args = [
                "--apply", str(manifests),
                "--secret", "anthropic-credentials=ANTHROPIC_API_KEY:api-key",
                "--state-dir", str(root / "state"),
                "--egress-upstream", f"api.anthropic.com:443={fake.address}",
                "--egress-upstream-ca", str(ca.cert_path),
            ]  # fmt: skip
            with clrk_dev(args, {**os.environ, "ANTHROPIC_API_KEY": key}) as running:
                yield WarmDev(running, fake)


def _agent(name: str, command: list[str], extra: str = "", warm: int = 1) -> str:
    return TASK_AGENT.format(name=name, command=json.dumps(command), extra=extra, warm=warm)


def _startup_id(dev: WarmDev, agent: str) -> str:
    """The id of the first start-up of ``agent`` logged (the tag of its "start-up call" line)."""

    def found() -> str | None:
        match = re.search(rf"\[default/{agent} start-up ([0-9a-f-]{{36}})\] start-up call: ", dev.log_text())
        return match.group(1) if match else None

    return _eventually(found, 30, f"a start-up of {agent} logged")


def _final(dev: WarmDev, invocation_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        document: dict[str, Any] = httpx.get(f"{dev.url}/invocations/{invocation_id}", timeout=10).json()
        return document if document["status"] not in ("queued", "running") else None

    return _eventually(done, 60, f"{invocation_id} finished")


def _chat_spans(dev: WarmDev, invocation_id: str) -> list[dict[str, Any]]:
    """The invocation's model-call spans, once there is one (the gateway ends it after the answer)."""

    def chats() -> list[dict[str, Any]] | None:
        found = [s for s in dev.spans(invocation_id) if s["name"].startswith("chat ")]
        return found or None

    return _eventually(chats, 10, f"a model-call span of {invocation_id}")


def test_an_invocation_counts_only_its_own_call_and_the_start_up_call_is_the_agents(dev: WarmDev) -> None:
    startup = _startup_id(dev, "warm-model")
    accepted = dev.post("warm-model", {}, Prefer="respond-async")
    assert accepted.status_code == 202, accepted.text
    invocation = accepted.headers["x-clrk-invocation-id"]
    document = _final(dev, invocation)
    assert document["status"] == "succeeded", document
    report = json.loads(httpx.get(f"{dev.url}/invocations/{invocation}/result", timeout=10).text)
    assert report["call"] == 200, report
    assert report["start-up connection"] == "closed", "a connection opened while it started outlived its request"
    assert document["usage"] == {
        "inputTokens": Behaviour().input_tokens,
        "outputTokens": Behaviour().output_tokens,
        "cacheCreationInputTokens": 0,
        "cacheReadInputTokens": 0,
        "modelCalls": 1,
    }, "the invocation is counted its own call, not the one made while its agent started"

    (span,) = [s for s in dev.spans(invocation) if s["name"] == "clrk.invocation"]
    assert span["attributes"]["clrk.sandbox.started_ahead"] is True, "its agent was started before its request"

    # The call made while it started is the agent's, under the start-up id, in a trace of its own.
    (early,) = _chat_spans(dev, startup)
    assert early["attributes"]["clrk.agent"] == "default/warm-model"
    assert early["attributes"]["gen_ai.usage.input_tokens"] == Behaviour().input_tokens
    assert early["traceId"] not in {s["traceId"] for s in dev.spans(invocation)}, "no trace of the invocation's"
    shown = subprocess.run(
        [sys.executable, "-m", "clrk", "traces", "--url", dev.url, "--invocation", startup],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "chat claude-test" in shown and "clrk.agent = default/warm-model" in shown, shown

    # The envelope told the agent what its environment could not (it started before its request).
    envelope = report["envelope"]
    assert envelope[INVOCATION_ATTRIBUTE] == invocation
    assert envelope[DEADLINE_ATTRIBUTE] and envelope[TRACE_ATTRIBUTE], envelope
    assert report["env"] == dict.fromkeys(report["env"]), "no per-request variable in a pre-started agent's env"


def test_the_invocations_model_call_is_a_child_of_the_invocations_span(dev: WarmDev) -> None:
    response = dev.post("warm-model", {})
    assert response.status_code == 200, response.text + dev.log_text()[-3000:]
    invocation = response.headers["x-clrk-invocation-id"]
    report = response.json()
    (chat,) = _chat_spans(dev, invocation)
    (span,) = [s for s in dev.spans(invocation) if s["name"] == "clrk.invocation"]
    assert span["attributes"]["clrk.sandbox.started_ahead"] is True
    assert chat["parentSpanId"] == span["spanId"] and chat["traceId"] == span["traceId"]
    assert chat["attributes"]["clrk.agent"] == "default/warm-model"
    assert report["envelope"][TRACE_ATTRIBUTE].split("-")[1:3] == [span["traceId"], span["spanId"]]


def test_the_proxy_credentials_an_agent_held_are_refused_once_its_invocation_ended(dev: WarmDev) -> None:
    first = dev.post("warm-model", {})
    assert first.status_code == 200, first.text
    held = first.json()
    assert held["call"] == 200, "they worked while the invocation ran"
    user = httpx.URL(held["proxy"]).username
    assert user and user != first.headers["x-clrk-invocation-id"], "a pre-started agent holds its sandbox's own"
    second = dev.post("warm-model", {"reuse": held["proxy"]})
    assert second.status_code == 200, second.text
    assert "407" in str(second.json()["reused"]), second.json()
    assert not [r for r in dev.fake.messages_requests() if b"reused" in r.body], "it reached the upstream"


def test_the_start_up_call_counts_against_the_agents_budget(dev: WarmDev) -> None:
    """BUDGET leaves room for one call: the one made while the agent started. Its invocation's
    call is then refused by the gateway (429), which it would not be were the start-up call
    counted to no one."""
    _startup_id(dev, "warm-budget")
    assert re.search(r"\[default/warm-budget start-up [0-9a-f-]{36}\] start-up call: 200 200", dev.log_text())
    response = dev.post("warm-budget", {})
    assert response.status_code == 200, response.text
    assert response.text.strip() == "call: 200 429"


def test_an_agent_that_cannot_start_ahead_is_started_on_request_and_the_log_says_so(dev: WarmDev) -> None:
    failing = dev.wait_for_log(
        re.escape(WARM_START_PREFIX) + r'(\{"agent":"default/warm-broken","state":"failing".*\})'
    )
    state = json.loads(failing.group(1))
    assert state["failures"] == FALLBACK_AFTER
    assert "exited with status 3" in state["reason"] and "cannot start ahead: no config" in state["reason"]
    logged = dev.log_text()
    assert logged.count("default/warm-broken: warm start failed") == FALLBACK_AFTER, "each failure logged by name"
    response = dev.post("warm-broken", {"n": 1})
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"n": 1}, "served, by an agent started on request"
    again = dev.post("warm-broken", {"n": 2})
    assert again.status_code == 200 and again.json()["data"] == {"n": 2}
    assert dev.log_text().count(WARM_START_PREFIX + '{"agent":"default/warm-broken","state":"failing"') == 1, (
        "said once"
    )
