"""The product's main job, end to end: the guide's request to jq-bot under `clrk dev`."""

from __future__ import annotations

import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.jq_bot import ECHO_AGENT, JQ_FILTER, REPO, Dev

GUIDE_BODY = (
    '{"input":[{"name":"alice","age":30,"role":"eng"},{"name":"bob","age":42,"role":"pm"},'
    '{"name":"carol","age":25,"role":"eng"}],"want":"names of engineers, ascending by age"}'
)
GUIDE_ANSWER = '{"filter":"[.[] | select(.role == \\"eng\\")] | sort_by(.age) | map(.name)","output":["carol","alice"]}'


def _jq_bot(dev: Dev, body: str = GUIDE_BODY) -> httpx.Response:
    headers = {"content-type": "application/json", "X-Clrk-TaskAgent": "default/jq-bot"}
    return httpx.post(dev.url + "/", headers=headers, content=body, timeout=60)


def test_the_guides_request_gives_the_guides_answer(dev: Dev) -> None:
    response = _jq_bot(dev)
    assert response.status_code == 200, response.text + dev.log_text()[-3000:]
    assert response.text.strip() == GUIDE_ANSWER
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-clrk-invocation-id"]
    calls = dev.fake.messages_requests()
    assert calls, "the model was called through the egress gateway"
    assert all(call.headers["x-api-key"] == dev.key for call in calls), "the real key was injected"
    assert all("clrk-injected-by-proxy" not in str(call.headers) for call in calls)
    assert response.json()["filter"] == JQ_FILTER


def test_spans_reach_the_otlp_receiver(dev: Dev) -> None:
    response = _jq_bot(dev)
    invocation = response.headers["x-clrk-invocation-id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        mine = [s for s in dev.otlp.spans if s["attributes"].get("clrk.invocation.id") == invocation]
        if any(s["name"].startswith("chat ") for s in mine) and any(s["name"] == "POST /" for s in mine):
            break
        time.sleep(0.1)
    names = {s["name"] for s in mine}
    assert {"POST /", "clrk.invocation"} <= names, "the ingress's and the shim's spans"
    chat = next(s for s in mine if s["name"].startswith("chat "))
    attrs = chat["attributes"]
    assert attrs["gen_ai.system"] == "anthropic"
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["clrk.agent"] == "default/jq-bot"
    assert attrs["http.request.header.x-api-key"] == ["[redacted]"]
    assert len({s["traceId"] for s in mine}) == 1, "ingress, shim and model call share one trace"


def test_ingress_errors_over_real_sockets(dev: Dev) -> None:
    missing = httpx.post(dev.url + "/", json={})
    assert missing.status_code == 400 and missing.json()["error"]["type"] == "missing_agent"
    unknown = httpx.post(dev.url + "/", json={}, headers={"X-Clrk-TaskAgent": "default/nope"})
    assert unknown.status_code == 404
    assert httpx.get(dev.url + "/", headers={"X-Clrk-TaskAgent": "default/jq-bot"}).status_code == 405
    bad = _jq_bot(dev, body="{not json")
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_json"
    # The agent's own error: a body without "want".
    failed = _jq_bot(dev, body='{"input": [1]}')
    assert failed.status_code == 502
    assert failed.json()["error"]["invocationId"] == failed.headers["x-clrk-invocation-id"]
    # What HTTP cannot frame is refused by the server's protocol class, in the same JSON shape.
    host, port = dev.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-Evil: a\x00b\r\nContent-Length: 0\r\n\r\n")
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"content-type: application/json" in head.lower()
    assert json.loads(body)["error"]["type"] == "bad_request"


def test_concurrent_calls_to_one_and_two_agents(dev: Dev) -> None:
    def echo(i: int) -> httpx.Response:
        return httpx.post(dev.url + "/", json={"i": i}, headers={"X-Clrk-TaskAgent": "default/echo"}, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        bots = [pool.submit(_jq_bot, dev) for _ in range(3)]
        echoes = [pool.submit(echo, i) for i in range(6)]
        for future in bots:
            assert future.result().text.strip() == GUIDE_ANSWER
        for i, future in enumerate(echoes):
            event = future.result().json()
            assert event["data"] == {"i": i}, "each caller gets its own envelope back"
    ids = {f.result().headers["x-clrk-invocation-id"] for f in bots + echoes}
    assert len(ids) == 9


def test_reload_after_a_manifest_edit(dev: Dev) -> None:
    manifest = dev.manifests / "echo" / "taskagent.yaml"
    manifest.write_text(ECHO_AGENT.format(script="echo reloaded"))
    dev.wait_for_log("reloaded:")
    response = httpx.post(dev.url + "/", json={}, headers={"X-Clrk-TaskAgent": "default/echo"}, timeout=30)
    assert response.text.strip() == "reloaded"
    manifest.write_text("kind: [broken")
    dev.wait_for_log("reload failed")
    still = httpx.post(dev.url + "/", json={}, headers={"X-Clrk-TaskAgent": "default/echo"}, timeout=30)
    assert still.text.strip() == "reloaded", "a broken edit keeps the previous manifests serving"


def test_the_key_never_leaves_the_gateway(dev: Dev) -> None:
    _jq_bot(dev)
    assert dev.key not in dev.log_text()
    for path in dev.state_dir.rglob("*"):
        if path.is_file():
            assert dev.key.encode() not in path.read_bytes(), path
    for span in dev.otlp.spans:
        assert dev.key not in str(span)


def test_clrk_traces_shows_the_invocation(dev: Dev) -> None:
    invocation = _jq_bot(dev).headers["x-clrk-invocation-id"]
    deadline = time.monotonic() + 10
    while True:
        result = subprocess.run(
            [sys.executable, "-m", "clrk", "traces", "--url", dev.url, "--invocation", invocation],
            capture_output=True,
            text=True,
            check=True,
        )
        if "chat claude-haiku-4-5" in result.stdout or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert "chat claude-haiku-4-5" in result.stdout
    assert f"clrk.invocation.id = {invocation}" in result.stdout
    assert "http.request.header.x-api-key = ['[redacted]']" in result.stdout
    assert dev.key not in result.stdout


def test_without_the_key_clrk_dev_says_what_to_set(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "clrk",
            "dev",
            "--apply",
            str(REPO / "examples" / "jq-bot" / "manifests"),
            "--secret",
            "anthropic-credentials=ANTHROPIC_API_KEY:api-key",
            "--no-tui",
            "--port",
            "0",
            "--state-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 1
    assert "ANTHROPIC_API_KEY is not set" in result.stderr
    assert "Traceback" not in result.stderr
