"""The jq-bot scenario under a real ``clrk dev``: the example's manifests beside a plain echo
agent, the filter the fake model answers with, and what a test gets to look at (:class:`Dev`)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.fake_anthropic import FakeAnthropic
from tests.support.otlp_receiver import OtlpReceiver

__all__ = ["ECHO_AGENT", "GUIDE_ANSWER", "GUIDE_BODY", "JQ_FILTER", "REPO", "Dev"]

REPO = Path(__file__).resolve().parents[2]
JQ_FILTER = '[.[] | select(.role == "eng")] | sort_by(.age) | map(.name)'
"""What the fake model answers jq-bot with: the filter for the guide's request."""
GUIDE_BODY = (
    '{"input":[{"name":"alice","age":30,"role":"eng"},{"name":"bob","age":42,"role":"pm"},'
    '{"name":"carol","age":25,"role":"eng"}],"want":"names of engineers, ascending by age"}'
)
"""The guide's request (reference/claude-code-over-http.txt, README.md)."""
GUIDE_ANSWER = '{"filter":"[.[] | select(.role == \\"eng\\")] | sort_by(.age) | map(.name)","output":["carol","alice"]}'
"""The guide's answer, byte for byte."""
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
"""A second agent, its shell script left to fill in (``cat`` echoes the envelope back)."""


@dataclass
class Dev:
    """A running ``clrk dev``, its fake Anthropic upstream and OTLP receiver, and the key it holds."""

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
