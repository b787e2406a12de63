"""The guide's walk on a real cluster: install, apply jq-bot, curl it through a port-forward."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
CLRK = [sys.executable, "-m", "clrk"]
pytestmark = pytest.mark.e2e


def clrk(*args: str) -> str:
    result = subprocess.run([*CLRK, *args], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


@contextlib.contextmanager
def port_forward(context: str, target: str, namespace: str) -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    argv = ["kubectl", "--context", context, "-n", namespace, "port-forward", target, f"{port}:80"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.3)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def jq_bot(context: str) -> Iterator[str]:
    key = os.environ.get("ANTHROPIC_API_KEY")
    if not key:
        pytest.skip("ANTHROPIC_API_KEY is not set: jq-bot calls the real Messages API")
    secret = subprocess.run(
        ["kubectl", "--context", context, "-n", "clrk-system", "create", "secret", "generic",
         "anthropic-credentials", f"--from-literal=api-key={key}", "--dry-run=client", "-o", "json"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    subprocess.run(["kubectl", "--context", context, "apply", "-f", "-"], input=secret, text=True, check=True)
    grant = ["kubectl", "--context", context, "-n", "clrk-system", "annotate", "--overwrite", "secret"]
    subprocess.run([*grant, "anthropic-credentials", "clrk.dev/namespaces=default"], check=True)
    manifests = str(REPO / "examples" / "jq-bot" / "manifests")
    clrk("install", "--context", context)
    out = clrk("apply", "-f", manifests, "--wait", "--context", context)
    assert "default/jq-bot ready: http" in out
    yield manifests
    clrk("delete", "-f", manifests, "--context", context)


def test_guide_curl_through_port_forward(context: str, jq_bot: str) -> None:
    table = clrk("get", "taskagents", "--context", context)
    assert "jq-bot" in table and "True" in table
    body = {
        "input": [{"name": "alice", "age": 30, "role": "eng"}, {"name": "carol", "age": 25, "role": "eng"}],
        "want": "names of engineers, ascending by age",
    }
    with port_forward(context, "svc/clrk-default-jq-bot", "clrk") as port:
        response = httpx.post(
            f"http://127.0.0.1:{port}/", json=body, headers={"X-Clrk-TaskAgent": "default/jq-bot"}, timeout=120
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-clrk-invocation-id"]
    assert json.loads(response.text)["output"] == ["carol", "alice"]


def test_apply_again_is_a_no_op(context: str, jq_bot: str) -> None:
    out = clrk("apply", "-f", jq_bot, "--context", context)
    assert "configured" not in out and "created" not in out
