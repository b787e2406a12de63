"""A real `clrk dev` process serving jq-bot (and a second agent) with the real Claude CLI in real
sandboxes, through the real egress gateway, to a local fake Anthropic API over TLS."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator

import pytest

from tests.support.clrk_dev import clrk_dev
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.jq_bot import ECHO_AGENT, JQ_FILTER, REPO, Dev
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.threaded import in_thread
from tests.support.tlsca import TestCA


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
