"""Async invocations against a real ``clrk dev`` (``python -m clrk dev``) running real agents in
real sandboxes: ``Prefer: respond-async``, ``/invocations/<id>`` and its result, events and
cancel, the signed callback to a real receiver, Callers seeing only their own runs, and a
restart on the same state directory.

"Before the agent finished" is checked by order, never by time: the agent (tests/agents/gated.sh)
prints ``first`` and waits for a gate file that the test makes only after what it checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import EventSource
from standardwebhooks import Webhook

from clrk_runtime.protocol.streams import Outcome
from tests.support.callback_receiver import CallbackReceiver
from tests.support.clrk_dev import clrk_dev
from tests.support.streams import GATED, agent_manifests, gate_dir

TREE = """\
cat >/dev/null
( exec sh -c 'trap "" TERM; sleep 1000' "clrk-tree-$CLRK_METADATA_INVOCATION_ID" ) &
echo first
while :; do sleep 0.1; done
"""
"""An agent that leaves a child behind (named after its invocation, to be found in /proc) and
never ends by itself."""
CALLER = """\
apiVersion: clrk.dev/v1alpha1
kind: Caller
metadata:
  name: {name}
spec:
  keySha256: {digest}
  agents: [gated, tree]
---
"""
KEYS = {"alice": "alice-async-key-0123456789", "bob": "bob-async-key-0123456789"}
ATTEMPTS = 3


@dataclass
class Dev:
    url: str
    gates: Path
    state_dir: Path
    _count: int = 0

    def gate(self) -> Path:
        """A fresh gate file path (not made yet)."""
        self._count += 1
        return self.gates / f"gate-{self._count}"

    def post(self, agent: str, gate: Path, caller: str = "alice", **headers: str) -> httpx.Response:
        sent = {"X-Clrk-TaskAgent": f"default/{agent}", "content-type": "application/json", **_auth(caller)}
        return httpx.post(self.url + "/", content=_body(gate), headers=sent | headers, timeout=60)

    def get(self, path: str, caller: str = "alice") -> httpx.Response:
        return httpx.get(self.url + path, headers=_auth(caller), timeout=30)


def _auth(caller: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[caller]}"} if caller in KEYS else {}


def _body(gate: Path) -> bytes:
    return json.dumps({"gate": str(gate)}).encode()


def _manifests(root: Path, gates: Path, concurrency: int = 8, callers: bool = True) -> Path:
    (gates / "open").touch()  # agents waiting on it go straight through
    (gates / "tree.sh").write_text(TREE)
    agents = {
        "gated": ["sh", "-c", f'exec sh {GATED} "$(cat | jq -r .data.gate)"'],
        "tree": ["sh", str(gates / "tree.sh")],
    }
    text = agent_manifests(agents, concurrency)
    if callers:
        text += "".join(
            CALLER.format(name=name, digest=hashlib.sha256(key.encode()).hexdigest()) for name, key in KEYS.items()
        )
    manifests = root / "manifests"
    manifests.mkdir(exist_ok=True)
    (manifests / "agents.yaml").write_text(text)
    return manifests


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    """``clrk dev --auth keys`` with Callers alice and bob; callbacks tried 3 times, quickly."""
    root = tmp_path_factory.mktemp("async")
    with gate_dir() as gates:
        manifests = _manifests(root, gates)
        args = ["--auth", "keys", "--apply", str(manifests), "--state-dir", str(root / "state")]
        env = {**os.environ, "CLRK_CALLBACK_ATTEMPTS": str(ATTEMPTS), "CLRK_CALLBACK_BACKOFF": "0.05"}
        with clrk_dev(args, env | {"CLRK_HEARTBEAT": "0.5"}) as running:
            yield Dev(running.url, gates, root / "state")


def _accepted(response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    invocation_id = str(response.headers["x-clrk-invocation-id"])
    assert response.headers["location"] == f"/invocations/{invocation_id}"
    assert response.headers["preference-applied"] == "respond-async"
    assert response.json()["status"] in ("queued", "running")
    return invocation_id


def _until(dev: Dev, invocation_id: str, done: Callable[[dict[str, Any]], bool], caller: str = "alice") -> Any:
    """The status document once ``done`` holds of it (polled; fails after 60 s)."""
    deadline = time.monotonic() + 60
    while True:
        response = dev.get(f"/invocations/{invocation_id}", caller)
        assert response.status_code == 200, response.text
        document = response.json()
        if done(document):
            return document
        assert time.monotonic() < deadline, f"not there within 60 s: {document}"
        time.sleep(0.05)


def _final(dev: Dev, invocation_id: str, caller: str = "alice") -> Any:
    return _until(dev, invocation_id, lambda d: d["status"] not in ("queued", "running"), caller)


def _first_output_while_running(dev: Dev, invocation_id: str, then: Callable[[], None]) -> list[Any]:
    """Follow ``…/events``: once the first ``output`` came, call ``then`` (which lets the agent
    go on, or cancels it); every event to the end."""
    events: list[Any] = []
    headers = {**_auth("alice"), "Accept": "text/event-stream"}
    url = f"{dev.url}/invocations/{invocation_id}/events"
    with httpx.Client(timeout=60) as client, client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        for event in EventSource(response).iter_sse():
            events.append(event)
            if event.event == "output" and [e.event for e in events].count("output") == 1:
                then()
    return events


def test_accepted_before_the_agent_ends_then_the_same_answer_as_a_synchronous_call(dev: Dev) -> None:
    gate = dev.gate()
    invocation_id = _accepted(dev.post("gated", gate, Prefer="respond-async"))
    assert not gate.exists(), "202 came while the agent still waits for its gate"
    early = dev.get(f"/invocations/{invocation_id}/result")
    assert early.status_code == 404 and early.json()["error"]["type"] == "result_not_ready"
    gate.touch()
    document = _final(dev, invocation_id)
    assert document["status"] == "succeeded" and document["httpStatus"] == 200 and document["exitCode"] == 0
    assert document["usage"] == {
        "inputTokens": 0,
        "outputTokens": 0,
        "cacheCreationInputTokens": 0,
        "cacheReadInputTokens": 0,
        "modelCalls": 0,
    }
    result = dev.get(f"/invocations/{invocation_id}/result")
    synchronous = dev.post("gated", gate)
    assert synchronous.status_code == 200
    assert result.status_code == 200 and result.content == synchronous.content == b"first\nsecond\nlast"
    assert result.headers["content-type"] == synchronous.headers["content-type"]
    assert result.headers["x-clrk-invocation-status"] == "succeeded"


def test_events_stream_lines_as_the_agent_writes_them_then_the_outcome(dev: Dev) -> None:
    gate = dev.gate()
    invocation_id = _accepted(dev.post("gated", gate, Prefer="respond-async"))
    events = _first_output_while_running(dev, invocation_id, gate.touch)
    assert events[0].event == "status"
    assert [e.data for e in events if e.event == "output"] == ["first", "second", "last"]
    assert events[-1].event == "outcome"
    outcome = Outcome.parse(events[-1].data)
    assert (outcome.invocation_id, outcome.status, outcome.exit_code) == (invocation_id, 200, 0)


def test_another_callers_run_is_unknown_to_it(dev: Dev) -> None:
    invocation_id = _accepted(dev.post("gated", dev.gates / "open", Prefer="respond-async"))
    _final(dev, invocation_id)
    unknown = dev.get("/invocations/0193a4c2-0000-7000-8000-000000000000", "bob")
    for path in ("", "/result", "/events"):
        response = dev.get(f"/invocations/{invocation_id}{path}", "bob")
        assert response.status_code == 404 and response.json() == unknown.json()
    assert httpx.delete(f"{dev.url}/invocations/{invocation_id}", headers=_auth("bob")).status_code == 404
    assert dev.get(f"/invocations/{invocation_id}", "nobody").status_code == 401
    assert dev.get(f"/invocations/{invocation_id}", "alice").status_code == 200


def _tree(invocation_id: str) -> list[int]:
    """Processes whose command line names the invocation (the tree agent's child)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"clrk-tree-{invocation_id}".encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_delete_cancels_a_running_run_and_its_whole_tree(dev: Dev) -> None:
    invocation_id = _accepted(dev.post("tree", dev.gates / "open", Prefer="respond-async"))
    answers: list[httpx.Response] = []

    def cancel() -> None:
        assert _tree(invocation_id), "the agent's child runs"
        answers.append(httpx.delete(f"{dev.url}/invocations/{invocation_id}", headers=_auth("alice"), timeout=30))

    events = _first_output_while_running(dev, invocation_id, cancel)
    (cancelled,) = answers
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert Outcome.parse(events[-1].data).error == cancelled.json()["error"]
    deadline = time.monotonic() + 30
    while _tree(invocation_id):
        assert time.monotonic() < deadline, "the agent's tree outlived its cancel"
        time.sleep(0.05)
    again = httpx.delete(f"{dev.url}/invocations/{invocation_id}", headers=_auth("alice"), timeout=30)
    assert again.status_code == 409 and again.json()["error"]["type"] == "already_finished"
    assert _final(dev, invocation_id)["status"] == "cancelled"


def test_the_callback_is_one_signed_cloudevent(dev: Dev) -> None:
    with CallbackReceiver() as receiver:
        response = dev.post(
            "gated", dev.gates / "open", Prefer="respond-async", **{"X-Clrk-Callback-Url": receiver.url}
        )
        invocation_id = _accepted(response)
        document = _until(dev, invocation_id, lambda d: d["callback"]["state"] != "pending")
        (got,) = receiver.wait_for(1)
        assert len(receiver.received) == 1
    assert document["callback"]["state"] == "delivered" and document["callback"]["attempts"] == 1
    assert document["callback"]["lastStatus"] == 204 and document["callback"]["deliveredAt"]
    secret = (dev.state_dir / "callback-secrets" / "default").read_text().strip()
    event = Webhook(secret).verify(got.body, got.headers)
    assert got.headers["webhook-id"] == invocation_id == event["id"] == event["clrkinvocationid"]
    assert event["type"] == "dev.clrk.invocation.finished"
    assert event["data"]["status"] == "succeeded"
    assert event["data"]["result"] == {"contentType": document["contentType"], "body": "first\nsecond\nlast"}
    assert (dev.state_dir / "callback.key").stat().st_mode & 0o777 == 0o600


def test_a_receiver_that_is_down_is_tried_then_recorded_failed(dev: Dev) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook"
    invocation_id = _accepted(
        dev.post("gated", dev.gates / "open", Prefer="respond-async", **{"X-Clrk-Callback-Url": url})
    )
    document = _until(dev, invocation_id, lambda d: d["callback"]["state"] != "pending")
    callback = document["callback"]
    assert (callback["state"], callback["attempts"], callback["lastStatus"]) == ("failed", ATTEMPTS, None)
    assert callback["lastError"]


def test_an_unsafe_callback_url_is_refused(dev: Dev) -> None:
    response = dev.post(
        "gated", dev.gates / "open", Prefer="respond-async", **{"X-Clrk-Callback-Url": "http://169.254.169.254/"}
    )
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_callback_url"


def test_a_restart_keeps_results_resumes_the_queue_and_says_what_it_cut(tmp_path: Path) -> None:
    """One sandbox at a time: B runs (and is cut by the stop), C waits for the sandbox (and is
    run by the next process); A had finished (its result stays), then expires."""
    with gate_dir() as gates:
        manifests = _manifests(tmp_path, gates, concurrency=1, callers=False)
        args = ["--apply", str(manifests), "--state-dir", str(tmp_path / "state")]
        with clrk_dev(args, os.environ) as running:
            dev = Dev(running.url, gates, tmp_path / "state")
            a = _accepted(dev.post("gated", gates / "open", Prefer="respond-async"))
            _final(dev, a)
            first = dev.get(f"/invocations/{a}/result")
            c_gate = dev.gate()
            b = _accepted(dev.post("gated", dev.gate(), Prefer="respond-async"))
            _until(dev, b, lambda d: d["startedAt"] is not None)
            c = _accepted(dev.post("gated", c_gate, Prefer="respond-async"))
            _until(dev, c, lambda d: d["attempts"] >= 1)  # claimed, waiting for the one sandbox
            assert dev.get(f"/invocations/{c}").json()["startedAt"] is None
        c_gate.touch()
        with clrk_dev([*args, "--async-retention", "3s"], os.environ) as running:
            dev.url = running.url
            again = dev.get(f"/invocations/{a}/result")
            assert again.status_code == 200 and again.content == first.content
            cut = dev.get(f"/invocations/{b}").json()
            assert cut["status"] == "failed" and cut["error"]["type"] == "interrupted"
            assert "stopped while this invocation ran" in cut["error"]["message"]
            assert dev.get(f"/invocations/{b}/result").status_code == 502
            resumed = _final(dev, c)
            assert resumed["status"] == "succeeded"
            assert dev.get(f"/invocations/{c}/result").content == b"first\nsecond\nlast"
            deadline = time.monotonic() + 30
            while (expired := dev.get(f"/invocations/{c}/result")).status_code == 200:
                assert time.monotonic() < deadline, "kept past its retention"
                time.sleep(0.1)
            assert expired.status_code == 410 and expired.json()["error"]["type"] == "result_expired"
