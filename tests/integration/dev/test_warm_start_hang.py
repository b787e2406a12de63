"""A warm-started agent that hangs never holds ``clrk dev`` up.

``clrk dev`` waits a few seconds (``WARM_WAIT_S``) for its agents' warm sandboxes, then serves
without them: a hung start-up is replaced in the background only after ``CLRK_WARM_START_TIMEOUT``
(60 s by default, three times before warm start falls back), and a caller meanwhile gets a sandbox
started for its request.
"""

from __future__ import annotations

import json
import os
import re

import httpx

from clrk.dev.serving import WARM_WAIT_S
from tests.support.clrk_dev import clrk_dev
from tests.support.readable import agents_dir
from tests.support.streams import gate_dir

TASK_AGENT = """\
apiVersion: clrk.dev/v1alpha1
kind: TaskAgent
metadata:
  name: warm-hung
spec:
  template:
    spec:
      image: example.com/warm-hung:1
      command: {command}
  timeout: 30s
  warmPoolSize: 1
  warmStart: true
"""


def test_clrk_dev_serves_while_a_warm_start_hangs() -> None:
    with gate_dir() as root:
        manifests = root / "manifests"
        manifests.mkdir()
        command = json.dumps(["sh", str(agents_dir() / "warm_hung.sh")])
        (manifests / "agent.yaml").write_text(TASK_AGENT.format(command=command))
        args = ["--apply", str(manifests), "--state-dir", str(root / "state")]
        with clrk_dev(args, dict(os.environ)) as running:
            said = f"default/warm-hung: warm sandboxes still starting after {WARM_WAIT_S:g}s; serving meanwhile"
            assert said in running.log_text(), running.log_text()[-3000:]
            assert re.search(r"\[default/warm-hung start-up [0-9a-f-]{36}\] loading something", running.log_text())
            headers = {"X-Clrk-TaskAgent": "default/warm-hung", "content-type": "application/json"}
            answer = httpx.post(running.url + "/", content=b'{"n": 1}', headers=headers, timeout=30)
            assert answer.status_code == 200, answer.text
            assert answer.json()["data"] == {"n": 1}, "served by an agent started on request"
