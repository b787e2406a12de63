"""Shared fixtures for the reliability suite."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from clrk.ingress import AgentTarget, CallerKeys, IngressSettings, InProcessForwarder, create_app
from clrk_runtime.asgi import ShimApp
from clrk_runtime.httpserver import Implementation, http_protocol
from clrk_runtime.runtime import AgentRuntime
from clrk_runtime.settings import RuntimeSettings
from tests.support.processes import live_processes
from tests.support.serving import uvicorn_serving
from tests.support.threaded import in_thread

BAD_INPUT_AGENT = "default/cat"
"""Echoes its stdin: the CloudEvent envelope the shim built."""
BAD_INPUT_ENV_AGENT = "default/env"
"""Prints its whole environment, then its stdin: whatever leaked into the agent shows."""
BAD_INPUT_MAX_BODY = 4096
BAD_INPUT_BODY_TIMEOUT = 1.0
BAD_INPUT_HEAD_TIMEOUT = 0.5
BAD_INPUT_SANDBOX_UIDS = range(50300, 50556)
"""Otherwise unused uids for the agents, so that their processes can be counted."""


@dataclass(frozen=True)
class BadInputIngress:
    """A real ingress on 127.0.0.1:<port>, forwarding to real shims (``cat`` and ``env; cat``)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _bad_input_runtime(root: Path, agent: str, command: list[str]) -> AgentRuntime:
    return AgentRuntime(
        RuntimeSettings(
            command=command,
            sandbox="plain",
            temp_root=root,
            agent=agent,
            sandbox_uid=BAD_INPUT_SANDBOX_UIDS.start,
            sandbox_uids=len(BAD_INPUT_SANDBOX_UIDS),
            timeout=10,
        )
    )


@asynccontextmanager
async def _bad_input_serving(root: Path, implementation: Implementation = "auto") -> AsyncIterator[BadInputIngress]:
    runtimes = {
        BAD_INPUT_AGENT: _bad_input_runtime(root, BAD_INPUT_AGENT, ["cat"]),
        BAD_INPUT_ENV_AGENT: _bad_input_runtime(root, BAD_INPUT_ENV_AGENT, ["sh", "-c", "env; cat"]),
    }
    for runtime in runtimes.values():
        await runtime.start()
    try:
        forwarder = InProcessForwarder()
        forwarder.set_apps(
            {ref: (AgentTarget(ref, 10.0), ShimApp(runtime, lifespan=False)) for ref, runtime in runtimes.items()}
        )
        settings = IngressSettings(
            max_body_bytes=BAD_INPUT_MAX_BODY,
            body_timeout_seconds=BAD_INPUT_BODY_TIMEOUT,
            head_timeout_seconds=BAD_INPUT_HEAD_TIMEOUT,
        )
        app = create_app(forwarder, CallerKeys(open_mode=True), settings)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            lifespan="off",
            log_level="warning",
            access_log=False,
            http=http_protocol(settings.head_timeout_seconds, implementation=implementation),
        )
        async with uvicorn_serving(config) as port:
            yield BadInputIngress("127.0.0.1", port)
    finally:
        for runtime in runtimes.values():
            await runtime.stop()


@contextmanager
def bad_input_ingress_with(implementation: Implementation = "auto") -> Iterator[BadInputIngress]:
    """The ingress (max body 4 KiB, body read timeout 1 s, head timeout 0.5 s, open mode) with two
    shims behind it, served by uvicorn with the platform's protocol class (as ``clrk dev`` serves
    it; ``auto``: httptools if installed, else h11) on its own loop in a background thread."""
    root = Path(tempfile.mkdtemp(prefix="clrk-reliability-"))
    root.chmod(0o711)
    try:
        with in_thread(_bad_input_serving(root, implementation)) as ingress:
            yield ingress
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def bad_input_ingress() -> Iterator[BadInputIngress]:
    """``bad_input_ingress_with("auto")`` for the whole module."""
    with bad_input_ingress_with() as ingress:
        yield ingress


# -- faults and isolation (tests/reliability/test_faults.py, test_isolation.py) --------------------

_FIRST_UID = RuntimeSettings.model_fields["sandbox_uid"].default
FAULTS_DEV_UIDS = range(_FIRST_UID, _FIRST_UID + RuntimeSettings.model_fields["sandbox_uids"].default)
"""The uids ``clrk dev`` (run as root) gives its sandboxes: the default range."""
FAULTS_SHIM_UIDS = range(50600, 50856)
"""Otherwise unused uids for the shim-level fault tests, so counting their processes counts only ours."""


@dataclass
class FaultsDev:
    """A real ``clrk dev`` (``--no-tui``), its fake Anthropic upstream and OTLP receiver."""

    url: str
    process: subprocess.Popen[str]
    output: list[str]
    fake: Any
    otlp: Any
    key: str
    state_dir: Path
    egress_port: int

    def log_text(self) -> str:
        return "".join(self.output)


@contextmanager
def faults_dev(root: Path, agents: dict[str, str], *, extra_env: dict[str, str] | None = None) -> Iterator[FaultsDev]:
    """``clrk dev`` serving jq-bot (the real Claude CLI) and the TaskAgent YAMLs in ``agents``
    (name → manifest text), through its real egress gateway, to a fake Anthropic over TLS."""
    from tests.integration.dev.conftest import JQ_FILTER, REPO
    from tests.support.clrk_dev import clrk_dev
    from tests.support.fake_anthropic import FakeAnthropic
    from tests.support.otlp_receiver import OtlpReceiver
    from tests.support.tlsca import TestCA

    ca = TestCA.create(root / "ca")
    leaf = ca.issue(["api.anthropic.com"])
    manifests = root / "manifests"
    shutil.copytree(REPO / "examples" / "jq-bot", manifests / "jq-bot")
    for name, text in agents.items():
        (manifests / name).mkdir()
        (manifests / name / "taskagent.yaml").write_text(text)
    key = "sk-ant-faults-" + secrets.token_hex(20)
    state_dir = root / "state"
    with in_thread(FakeAnthropic(leaf)) as fake, in_thread(OtlpReceiver()) as otlp:
        fake.behaviour.structured_output = {"filter": JQ_FILTER}
        env = {
            **os.environ,
            **(extra_env or {}),
            "ANTHROPIC_API_KEY": key,
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        args = [
            "--apply", str(manifests / "jq-bot" / "manifests"),
            *[item for name in agents for item in ("--apply", str(manifests / name))],
            "--secret", "anthropic-credentials=ANTHROPIC_API_KEY:api-key",
            "--state-dir", str(state_dir),
            "--egress-upstream", f"api.anthropic.com:443={fake.address}",
            "--egress-upstream-ca", str(ca.cert_path),
        ]  # fmt: skip
        with clrk_dev(args, env) as running:
            yield FaultsDev(
                running.url, running.process, running.output, fake, otlp, key, state_dir, faults_egress_port(running)
            )


def faults_egress_port(running: Any) -> int:
    """The egress gateway's port: the one TCP port ``clrk dev`` listens on besides the ingress."""
    ingress = int(running.url.rsplit(":", 1)[1])
    ports = faults_listening_ports(running.process.pid) - {ingress}
    assert len(ports) == 1, ports
    return ports.pop()


def faults_listening_ports(pid: int) -> set[int]:
    """TCP ports in LISTEN state whose socket belongs to ``pid``."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


faults_processes = live_processes


def faults_wait_for(predicate: Any, timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def faults_key_traces(key: str, texts: list[str], roots: list[Path], spans: list[Any]) -> list[str]:
    """Where the key appears: in ``texts``, any file under ``roots``, or any span; [] if nowhere."""
    found = [f"text #{i}" for i, text in enumerate(texts) if key in text]
    for root in roots:
        for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
            if path.is_file() and key.encode() in path.read_bytes():
                found.append(str(path))
    found += [f"span {span.get('name')}" for span in spans if key in json.dumps(span, default=str)]
    return found
