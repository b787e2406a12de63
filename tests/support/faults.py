"""The fault and isolation tiers' ``clrk dev``: a real process serving jq-bot and the tests' own
agents through its real egress gateway to a fake Anthropic over TLS, and what those tests look
at (its processes, its listening ports, where a key turns up); used by
``tests/reliability/test_faults.py`` and ``test_isolation.py``."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clrk_runtime.settings import RuntimeSettings
from tests.support.clrk_dev import RunningDev, clrk_dev
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.jq_bot import JQ_FILTER, REPO
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.processes import live_processes
from tests.support.threaded import in_thread
from tests.support.tlsca import TestCA

__all__ = [
    "FAULTS_DEV_UIDS",
    "FAULTS_SHIM_UIDS",
    "FaultsDev",
    "faults_dev",
    "faults_egress_port",
    "faults_key_traces",
    "faults_listening_ports",
    "faults_processes",
    "faults_wait_for",
]

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
    fake: FakeAnthropic
    otlp: OtlpReceiver
    key: str
    state_dir: Path
    egress_port: int

    def log_text(self) -> str:
        return "".join(self.output)


@contextmanager
def faults_dev(root: Path, agents: dict[str, str], *, extra_env: dict[str, str] | None = None) -> Iterator[FaultsDev]:
    """``clrk dev`` serving jq-bot (the real Claude CLI) and the TaskAgent YAMLs in ``agents``
    (name → manifest text), through its real egress gateway, to a fake Anthropic over TLS."""
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


def faults_egress_port(running: RunningDev) -> int:
    """The egress gateway's port: the one TCP port ``clrk dev`` listens on besides the ingress and
    the identity relays of warm-started plain sandboxes (told apart by their 407's body)."""
    ingress = int(running.url.rsplit(":", 1)[1])
    ports = {port for port in faults_listening_ports(running.process.pid) - {ingress} if not _identity_relay(port)}
    assert len(ports) == 1, ports
    return ports.pop()


def _identity_relay(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET http://clrk.invalid/ HTTP/1.1\r\nHost: clrk.invalid\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := conn.recv(4096)):
            answer += chunk  # the relay writes its head and body at once
    return b"clrk identity relay" in answer


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
