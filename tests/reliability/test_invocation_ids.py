"""Invocation ids are the platform's: replayed against a real ``clrk dev`` (Callers required), with
a real agent calling the model through the real egress gateway to a fake Anthropic over TLS.

Seen before: a second ``ce-id`` was checked by the ingress and used by the shim; a caller could
revoke another invocation's proxy credentials by reusing its event id; a redelivered CloudEvent
(same id) got 407; an id with ``:`` got 407; ``/_clrk/traces`` answered without a key."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import secrets
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.clrk_dev import clrk_dev
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.faults import FAULTS_DEV_UIDS, faults_egress_port, faults_processes, faults_wait_for
from tests.support.readable import agents_dir
from tests.support.threaded import in_thread
from tests.support.tlsca import TestCA

AGENT = "default/caller-ids"
KEYS = {"alice": "alice-" + secrets.token_hex(16), "bob": "bob-" + secrets.token_hex(16)}
CALLER = """\
apiVersion: clrk.dev/v1alpha1
kind: Caller
metadata:
  name: {name}
spec:
  keySha256: {digest}
  agents: [caller-ids]
"""
MANIFESTS = f"""\
apiVersion: clrk.dev/v1alpha1
kind: TaskAgent
metadata:
  name: caller-ids
spec:
  template:
    spec:
      image: registry.example.com/caller-ids:1
      command: [sh, {agents_dir() / "model.sh"}]
  timeout: 30s
  maxConcurrency: 4
---
apiVersion: clrk.dev/v1alpha1
kind: CredentialInjectionPolicy
metadata:
  name: anthropic-for-caller-ids
spec:
  host: api.anthropic.com
  header: x-api-key
  secretKeyRef:
    name: anthropic-credentials
    key: api-key
  agents: [caller-ids]
"""


@dataclass
class KeyedDev:
    url: str
    fake: FakeAnthropic
    key: str
    egress_port: int


@pytest.fixture(scope="module")
def dev() -> Iterator[KeyedDev]:
    """``clrk dev --auth keys`` serving one agent, to Callers alice and bob."""
    root = Path(tempfile.mkdtemp(prefix="clrk-ids-", dir="/var/tmp"))
    try:
        ca = TestCA.create(root / "ca")
        manifests = root / "manifests"
        manifests.mkdir()
        callers = [CALLER.format(name=n, digest=hashlib.sha256(k.encode()).hexdigest()) for n, k in KEYS.items()]
        (manifests / "agent.yaml").write_text("---\n".join([MANIFESTS, *callers]))
        key = "sk-ant-ids-" + secrets.token_hex(20)
        with in_thread(FakeAnthropic(ca.issue(["api.anthropic.com"]))) as fake:
            args = [
                "--auth", "keys",
                "--apply", str(manifests),
                "--secret", "anthropic-credentials=ANTHROPIC_API_KEY:api-key",
                "--state-dir", str(root / "state"),
                "--egress-upstream", f"api.anthropic.com:443={fake.address}",
                "--egress-upstream-ca", str(ca.cert_path),
            ]  # fmt: skip
            with clrk_dev(args, {**os.environ, "ANTHROPIC_API_KEY": key}) as running:
                yield KeyedDev(running.url, fake, key, faults_egress_port(running))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _post(dev: KeyedDev, caller: str, data: bytes = b"{}", headers: dict[str, str] | None = None) -> httpx.Response:
    sent = {"X-Clrk-TaskAgent": AGENT, "Authorization": f"Bearer {KEYS[caller]}", **(headers or {})}
    return httpx.post(dev.url + "/", content=data, headers=sent, timeout=40)


def _event(event_id: str, caller: str = "alice") -> dict[str, str]:
    return {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-source": f"/{caller}",
        "ce-type": "order.created",
    }


def _lines(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    return {name: value for name, _, value in (line.partition(": ") for line in response.text.splitlines())}


def _called_the_model(dev: KeyedDev, response: httpx.Response) -> dict[str, str]:
    """The agent's report, having checked that its model call went through with the key."""
    lines = _lines(response)
    assert lines["model"] == "200 200", f"the proxy or the upstream refused the call: {lines['model']}"
    assert lines["invocation"] == lines["envelope-invocation"] == response.headers["x-clrk-invocation-id"]
    assert dev.fake.requests[-1].headers["x-api-key"] == dev.key
    return lines


def _holding_agent() -> int:
    """The pid of the one model.sh waiting for SIGUSR1 (its trap is set)."""

    def ready() -> int | None:
        for pid, command in faults_processes(uids=FAULTS_DEV_UIDS).items():
            if "model.sh" not in command:
                continue
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
            if caught & (1 << (signal.SIGUSR1 - 1)):
                return pid
        return None

    return int(faults_wait_for(ready, 20, "the first agent to wait for its release"))


def test_a_ce_id_given_twice_is_400_and_the_agent_never_runs(dev: KeyedDev) -> None:
    calls = len(dev.fake.requests)
    headers = [
        ("X-Clrk-TaskAgent", AGENT),
        ("Authorization", f"Bearer {KEYS['alice']}"),
        *_event("checked").items(),
        ("ce-id", "used-instead"),
    ]
    refused = httpx.post(dev.url + "/", content=b"{}", headers=headers, timeout=40)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["message"]) == ("repeated_header", "header ce-id: sent 2 times; send it once")
    assert len(dev.fake.requests) == calls, "no model call: the agent never ran"
    _called_the_model(dev, _post(dev, "alice", headers=_event("after-the-refusal")))


def test_a_caller_reusing_another_invocations_event_id_cannot_revoke_it(dev: KeyedDev) -> None:
    """Alice's agent waits; Bob sends an event with the id of Alice's and finishes (its
    credentials are revoked at its end); Alice's agent then calls the model: it still may."""
    event_id = "order-" + secrets.token_hex(4)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        alice = pool.submit(_post, dev, "alice", b'{"hold": true}', _event(event_id))
        pid = _holding_agent()
        try:
            bob = _post(dev, "bob", headers=_event(event_id, "bob"))
        finally:
            os.kill(pid, signal.SIGUSR1)
        held = alice.result(40)
    bob_lines = _called_the_model(dev, bob)
    alice_lines = _called_the_model(dev, held)
    assert alice_lines["event"] == bob_lines["event"] == event_id, "each event keeps its own id"
    assert alice_lines["invocation"] != bob_lines["invocation"]


def test_a_redelivered_cloudevent_runs_fine_twice(dev: KeyedDev) -> None:
    """At-least-once delivery: the same event, again, after the first run ended."""
    event = _event("delivery-" + secrets.token_hex(4))
    first = _called_the_model(dev, _post(dev, "alice", b'{"n": 1}', event))
    again = _called_the_model(dev, _post(dev, "alice", b'{"n": 1}', event))
    assert first["event"] == again["event"] == event["ce-id"]
    assert first["invocation"] != again["invocation"]


def test_an_event_id_with_colons_runs_fine(dev: KeyedDev) -> None:
    event_id = f"urn:uuid:{uuid.uuid4()}"
    lines = _called_the_model(dev, _post(dev, "alice", headers=_event(event_id)))
    assert lines["event"] == event_id


def test_proxy_credentials_end_with_their_invocation(dev: KeyedDev) -> None:
    """The credentials an agent held are refused once its invocation has ended."""
    lines = _called_the_model(dev, _post(dev, "alice"))
    proxy = httpx.URL(lines["proxy"])
    late = proxy.copy_with(host="127.0.0.1", port=dev.egress_port)
    calls = len(dev.fake.requests)
    body = {"model": "m", "max_tokens": 1, "messages": []}
    with (
        httpx.Client(proxy=str(late), verify=False, timeout=10) as client,  # noqa: S501 - refused before TLS
        pytest.raises(httpx.ProxyError, match="407"),
    ):
        client.post("https://api.anthropic.com/v1/messages", json=body)
    assert len(dev.fake.requests) == calls, "nothing reached the upstream with the key"


def test_traces_want_a_callers_key_and_show_only_its_own(dev: KeyedDev) -> None:
    mine = _post(dev, "alice").headers["x-clrk-invocation-id"]
    theirs = _post(dev, "bob").headers["x-clrk-invocation-id"]
    anonymous = httpx.get(dev.url + "/_clrk/traces", timeout=10)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.json()["error"]["type"] == "unauthenticated"
    assert theirs not in anonymous.text and mine not in anonymous.text

    def shown() -> set[str] | None:
        answer = httpx.get(dev.url + "/_clrk/traces", headers={"Authorization": f"Bearer {KEYS['alice']}"}, timeout=10)
        assert answer.status_code == 200, answer.text
        ids = {str(span["attributes"].get("clrk.invocation.id")) for span in answer.json()["spans"]}
        return ids if mine in ids else None

    ids = faults_wait_for(shown, 10, "alice's spans")
    assert theirs not in ids, "another caller's invocation is not shown"
