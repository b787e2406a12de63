"""A real `clrk dev` process serving jq-bot (and a second agent) with the real Claude CLI in real
sandboxes, through the real egress gateway, to a local fake Anthropic API over TLS."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.clrk_dev import clrk_dev
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.threaded import in_thread
from tests.support.tlsca import TestCA

REPO = Path(__file__).resolve().parents[3]
JQ_FILTER = '[.[] | select(.role == "eng")] | sort_by(.age) | map(.name)'
ECHO_AGENT = """\
apiVersion: clrk.dev/v1alpha1
kind: TaskAgent
metadata:
  name: echo
spec:
  template:
    spec:
      image: registry.example.com/echo:1
      command: [sh, -c, "{script}"]
  timeout: 20s
  maxConcurrency: 8
"""


@dataclass
class Dev:
    url: str
    manifests: Path
    fake: FakeAnthropic
    otlp: OtlpReceiver
    key: str
    state_dir: Path
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    def log_text(self) -> str:
        return "".join(self.output)

    def wait_for_log(self, needle: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not logged within {timeout}s:\n{self.log_text()[-3000:]}")


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    root = tmp_path_factory.mktemp("dev")
    ca = TestCA.create(root / "ca")
    leaf = ca.issue(["api.anthropic.com"])
    manifests = root / "manifests"
    shutil.copytree(REPO / "examples" / "jq-bot", manifests / "jq-bot")
    (manifests / "echo").mkdir()
    (manifests / "echo" / "taskagent.yaml").write_text(ECHO_AGENT.format(script="cat"))
    key = "sk-ant-test-" + secrets.token_hex(20)
    with in_thread(FakeAnthropic(leaf)) as fake, in_thread(OtlpReceiver()) as otlp:
        fake.behaviour.structured_output = {"filter": JQ_FILTER}
        env = {
            **os.environ,
            "ANTHROPIC_API_KEY": key,
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        args = [
            "--apply", str(manifests / "jq-bot" / "manifests"),
            "--apply", str(manifests / "echo"),
            "--secret", "anthropic-credentials=ANTHROPIC_API_KEY:api-key",
            "--state-dir", str(root / "state"),
            "--egress-upstream", f"api.anthropic.com:443={fake.address}",
            "--egress-upstream-ca", str(ca.cert_path),
        ]  # fmt: skip
        with clrk_dev(args, env) as running:
            yield Dev(running.url, manifests, fake, otlp, key, root / "state", running.process, running.output)
