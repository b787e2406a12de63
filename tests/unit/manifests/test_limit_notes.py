"""`clrk validate` says which limit a long spec.timeout meets: async calls may run it, synchronous
ones are cut at 600 s. The real command, and the pure function behind it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from clrk.api import TaskAgent
from clrk.manifests.documents import load_all
from clrk.manifests.limits import limit_notes, short_duration

REPO = Path(__file__).resolve().parents[3]
AGENT = """\
apiVersion: clrk.dev/v1alpha1
kind: TaskAgent
metadata: {{name: bot, namespace: team}}
spec:
  template:
    spec:
      image: example.com/bot:1
      command: [/bin/sh, -c, cat]
  timeout: {timeout}
"""


def _agent(timeout: str) -> TaskAgent:
    return TaskAgent.model_validate(load_all(AGENT.format(timeout=timeout))[0])


@pytest.mark.parametrize(
    ("seconds", "shown"), [(3600, "1h"), (1800, "30m"), (5400, "90m"), (650, "650s"), (0.5, "0.5s"), (600, "10m")]
)
def test_durations_are_shown_in_their_shortest_exact_unit(seconds: float, shown: str) -> None:
    assert short_duration(seconds) == shown


def test_only_a_timeout_over_the_synchronous_limit_gets_a_note() -> None:
    assert limit_notes([_agent("600s"), _agent("100s")]) == []
    (note,) = limit_notes([_agent("30m"), _agent("10m")])
    assert note == (
        "TaskAgent team/bot: spec.timeout 30m: async invocations (Prefer: respond-async) may run 30m; "
        "synchronous calls are cut at 600s (MAX_SYNC_TIMEOUT_S: Knative's default request limit and what proxies hold)"
    )


def test_validate_prints_the_note_and_passes(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(AGENT.format(timeout="1h"))
    result = subprocess.run(
        [sys.executable, "-m", "clrk", "validate", "-f", str(path)], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert (
        "note: TaskAgent team/bot: spec.timeout 1h: async invocations (Prefer: respond-async) may run 1h"
        in result.stderr
    )
    assert result.stdout.startswith("ok: 1 TaskAgent(s)")
