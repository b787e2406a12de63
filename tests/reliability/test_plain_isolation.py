"""Isolation of the plain sandbox (what every pod runs), tried from inside one served by a real
``clrk dev --sandbox plain`` run as root, with its real egress gateway: an agent writes only in its
own directory (not /tmp, /var/tmp, /dev/shm, /run/lock or the state dir), reaches over TCP only the
gateway (not the ingress, the fake upstream or the OTLP receiver), binds nothing, reaches no
abstract socket of the host's, gets no root from a setuid-root program, and a file is cut at its
size limit; meanwhile jq-bot, in its own plain sandbox, still answers."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clrk_runtime.launching import landlock
from tests.support.faults import FaultsDev, faults_dev
from tests.support.readable import agents_dir

AGENTS = agents_dir()
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="a uid of the sandbox's own and a setuid-root program need root"),
    pytest.mark.skipif(landlock.kernel_abi() < 6, reason="this kernel's Landlock lacks scopes (ABI 6)"),
]
FILE_CAP = 1024 * 1024
CONFINED = f"""\
apiVersion: clrk.dev/v1alpha1
kind: TaskAgent
metadata:
  name: confined
spec:
  template:
    spec:
      image: registry.example.com/confined:1
      command: [sh, {AGENTS / "confined.sh"}]
  timeout: 30s
"""
SHARED = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")


@pytest.fixture(scope="module")
def plain_dev() -> Iterator[FaultsDev]:
    """``clrk dev`` with plain sandboxes, a file size limit of 1 MiB, its state dir under a
    traversable (0755) folder outside /tmp."""
    root = Path(tempfile.mkdtemp(prefix="clrk-plain-isolation-", dir="/var/tmp"))
    root.chmod(0o755)
    try:
        env = {"CLRK_SANDBOX": "plain", "CLRK_SANDBOX_FILE_SIZE": str(FILE_CAP)}
        with faults_dev(root, {"confined": CONFINED}, extra_env=env) as dev:
            yield dev
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def setuid_id() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="clrk-test-setuid-", dir="/var/tmp"))
    folder.chmod(0o755)
    program = folder / "id"
    shutil.copy("/usr/bin/id", program)
    program.chmod(0o4755)
    yield program
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def abstract() -> Iterator[str]:
    """An abstract unix socket this test process listens on: its name."""
    name = f"clrk-test-{uuid.uuid4().hex[:12]}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as held:
        held.bind(f"\0{name}")
        held.listen(8)
        yield name


@pytest.fixture
def mark() -> Iterator[str]:
    name = f"clrk-test-{secrets.token_hex(6)}"
    yield name
    for place in SHARED:
        for leftover in Path(place).glob(f"{name}*"):
            leftover.unlink(missing_ok=True)


def _lines(text: str) -> dict[str, str]:
    return {name: value.strip() for name, _, value in (line.partition(": ") for line in text.splitlines())}


def test_a_plain_sandbox_under_clrk_dev_reaches_only_its_dirs_and_the_gateway(
    plain_dev: FaultsDev, mark: str, setuid_id: Path, abstract: str
) -> None:
    dev = plain_dev
    state = dev.state_dir
    places = [*SHARED, str(state), str(state / "egress"), str(state / "logs")]
    ingress = int(dev.url.rsplit(":", 1)[1])
    otlp = int(dev.otlp.endpoint.rsplit(":", 1)[1].split("/")[0])
    data = {
        "mode": "probe",
        "mark": mark,
        "places": places,
        "ports": [ingress, dev.fake.port, otlp, dev.egress_port],
        "abstract": abstract,
        "setuid": str(setuid_id),
        "big": 8 * FILE_CAP,
        "https": "https://example.com/",
    }
    headers = {"X-Clrk-TaskAgent": "default/confined"}
    response = httpx.post(dev.url + "/", json=data, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    result = _lines(response.text)
    for place in places:
        assert result[f"write {place}"].endswith("Permission denied"), result
        assert not os.path.lexists(f"{place}/{mark}")
    assert all(result[name] == "ok" for name in result if name.startswith("write own ")), result
    for port in (ingress, dev.fake.port, otlp):
        assert result[f"tcp {port}"].endswith("Permission denied"), result
    assert result[f"tcp {dev.egress_port}"] == "connected"
    assert result["https"] == "403 000 exit 56", "the gateway answers, and refuses a host not allowed"
    assert result["bind"].endswith("Permission denied"), result
    assert result["abstract"].endswith("Operation not permitted"), result
    assert "euid=0" not in result["setuid"], result["setuid"]
    assert result["big"] == f"exit 153 size {FILE_CAP}", result["big"]
    body = '{"input":[{"name":"alice","role":"eng"}],"want":"names of engineers"}'
    jq_bot = httpx.post(
        dev.url + "/",
        content=body,
        headers={"content-type": "application/json", "X-Clrk-TaskAgent": "default/jq-bot"},
        timeout=60,
    )
    assert jq_bot.status_code == 200, jq_bot.text
