"""Isolation: from inside a bubblewrap sandbox of a real ``clrk dev``, an agent cannot read the
shim's environment or state, another sandbox's files, open TCP anywhere but the egress bridge,
resolve names, use the proxy without credentials, or CONNECT to a host it is not allowed. Last, the
key scan: the real key appears in nothing these tests produced."""

from __future__ import annotations

import concurrent.futures
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clrk_runtime.sandbox.backends import bwrap_works
from tests.support.faults import (
    FAULTS_DEV_UIDS,
    FaultsDev,
    faults_dev,
    faults_key_traces,
    faults_processes,
    faults_wait_for,
)
from tests.support.readable import agents_dir

AGENTS = agents_dir()
pytestmark = pytest.mark.skipif(
    not bwrap_works(FAULTS_DEV_UIDS.start, FAULTS_DEV_UIDS.start, os.geteuid() == 0),
    reason="bubblewrap does not work here",
)
SECRET_NAME = "CLRK_FAULTS_SHIM_SECRET"
SECRET_VALUE = "shim-secret-" + secrets.token_hex(16)
PROBE = f"""\
apiVersion: clrk.dev/v1alpha1
kind: TaskAgent
metadata:
  name: probe
spec:
  template:
    spec:
      image: registry.example.com/probe:1
      command: [sh, {AGENTS / "probe.sh"}]
  timeout: 30s
  maxConcurrency: 4
"""
PROBE_HEADERS = {"X-Clrk-TaskAgent": "default/probe"}
ARTIFACTS: list[str] = []


@pytest.fixture(scope="module")
def faults_isolated_dev() -> Iterator[FaultsDev]:
    """``clrk dev`` with a secret in its environment and its state dir under a traversable
    (0755) folder outside /tmp, so that only the product's own permissions protect it."""
    root = Path(tempfile.mkdtemp(prefix="clrk-faults-isolation-", dir="/var/tmp"))
    root.chmod(0o755)
    try:
        with faults_dev(root, {"probe": PROBE}, extra_env={SECRET_NAME: SECRET_VALUE}) as dev:
            yield dev
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _probe(dev: FaultsDev, data: dict[str, object]) -> httpx.Response:
    response = httpx.post(dev.url + "/", json=data, headers=PROBE_HEADERS, timeout=40)
    ARTIFACTS.append(response.text)
    return response


def _lines(text: str) -> dict[str, str]:
    return {name: value.strip() for name, _, value in (line.partition(": ") for line in text.splitlines())}


@pytest.fixture(scope="module")
def faults_probe_result(faults_isolated_dev: FaultsDev) -> dict[str, str]:
    """One probe run while another sandbox (holding a mark in its private dirs) is alive."""
    dev = faults_isolated_dev
    mark = "mark-" + secrets.token_hex(8)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        holder = pool.submit(_probe, dev, {"mode": "hold", "mark": mark})
        pid = faults_wait_for(
            lambda: next(
                (
                    p
                    for p, cmd in faults_processes(uids=FAULTS_DEV_UIDS).items()
                    if cmd.startswith("sh ") and "probe.sh" in cmd and Path(f"/proc/{p}/root/tmp/mark").exists()
                ),
                None,
            ),
            15,
            "the holding sandbox to leave its mark",
        )
        ingress = int(dev.url.rsplit(":", 1)[1])
        data = {
            "mode": "probe",
            "mark": mark,
            "secret_name": SECRET_NAME,
            "dev_pid": dev.process.pid,
            "peer_pid": pid,
            "state_dir": str(dev.state_dir),
            "ports": [ingress, dev.egress_port, dev.fake.port, int(dev.otlp.endpoint.rsplit(":", 1)[1].split("/")[0])],
        }
        try:
            response = _probe(dev, data)
        finally:
            os.kill(pid, signal.SIGUSR1)
        held = holder.result(30)
    assert held.status_code == 200 and held.text.startswith("held: "), held.text
    assert int(held.text.split()[1]) < 300, "the holder was released by the test, not by its own limit"
    assert response.status_code == 200, response.text
    result = _lines(response.text)
    result["_ports"] = " ".join(map(str, data["ports"]))  # type: ignore[call-overload]
    result["_text"] = response.text
    return result


def test_the_secret_in_clrk_devs_environment_is_out_of_reach(
    faults_probe_result: dict[str, str], faults_isolated_dev: FaultsDev
) -> None:
    r = faults_probe_result
    held = Path(f"/proc/{faults_isolated_dev.process.pid}/environ").read_bytes()
    assert f"{SECRET_NAME}={SECRET_VALUE}".encode() in held, "clrk dev really holds it"
    assert r["env-secret"] == "0"
    assert r["proc-environ-secret"] == "0", "no process visible in the sandbox has it"
    assert int(r["pids"]) <= 10, "its own pid namespace: only the sandbox's few processes"
    assert r["dev-environ"].endswith("No such file or directory"), r["dev-environ"]
    assert SECRET_VALUE not in r["_text"]


def test_the_state_dir_is_out_of_reach(faults_probe_result: dict[str, str], faults_isolated_dev: FaultsDev) -> None:
    r = faults_probe_result
    state = faults_isolated_dev.state_dir
    assert (state / "egress" / "ca" / "mitmproxy-ca.pem").is_file() and (state / "egress" / "budgets.sqlite3").is_file()
    # The state dir itself is 0755: an agent can list its names, nothing more.
    assert r["state-ls"].split() == [
        "callback-secrets",
        "callback.key",
        "egress",
        "invocations.sqlite3",
        "invocations.sqlite3-shm",
        "invocations.sqlite3-wal",
        "logs",
    ], r["state-ls"]
    assert r["ca-key"] == f"cat: {state}/egress/ca/mitmproxy-ca.pem: Permission denied", r["ca-key"]
    assert r["budgets"] == f"head: cannot open '{state}/egress/budgets.sqlite3' for reading: Permission denied"
    assert r["dev-log"] == f"head: cannot open '{state}/logs/dev.log' for reading: Permission denied"
    # Async invocations (their envelopes and results) and the key their callbacks are signed with.
    assert r["callback-key"] == f"cat: {state}/callback.key: Permission denied", r["callback-key"]
    assert r["callback-secrets"] == f"ls: cannot open directory '{state}/callback-secrets': Permission denied"
    assert r["invocations"] == f"head: cannot open '{state}/invocations.sqlite3' for reading: Permission denied"
    assert "PRIVATE KEY" not in r["_text"] and "SQLite format" not in r["_text"]


def test_another_sandboxs_files_are_out_of_reach(faults_probe_result: dict[str, str]) -> None:
    r = faults_probe_result
    assert r["peer-root"].endswith("No such file or directory"), r["peer-root"]
    assert r["peer-mark-found"] == ""


def test_no_tcp_but_the_egress_bridge_and_no_names(faults_probe_result: dict[str, str]) -> None:
    r = faults_probe_result
    for port in r["_ports"].split():
        assert "Connection refused" in r[f"tcp-127.0.0.1:{port}"], r[f"tcp-127.0.0.1:{port}"]
    assert "Network is unreachable" in r["tcp-other-host"], r["tcp-other-host"]
    assert r["resolve"] == "exit 2", r["resolve"]


def test_the_proxy_wants_credentials_and_an_allowed_host(faults_probe_result: dict[str, str]) -> None:
    r = faults_probe_result
    assert r["proxy-no-credentials"] == "407 exit 56"
    assert r["proxy-not-allowed"] == "403 exit 56"


def test_zz_the_key_scan_finds_no_trace_of_the_key(faults_isolated_dev: FaultsDev) -> None:
    """jq-bot's real call first (so the key is really in use), then every artifact: the answers,
    every log line, every file under the state dir, every span."""
    dev = faults_isolated_dev
    body = '{"input":[{"name":"alice","age":30,"role":"eng"}],"want":"names of engineers"}'
    headers = {"content-type": "application/json", "X-Clrk-TaskAgent": "default/jq-bot"}
    response = httpx.post(dev.url + "/", headers=headers, content=body, timeout=60)
    ARTIFACTS.append(response.text)
    assert response.status_code == 200, response.text
    assert [r.headers["x-api-key"] for r in dev.fake.messages_requests()] == [dev.key]
    faults_wait_for(lambda: any(s["name"].startswith("chat ") for s in dev.otlp.spans), 10, "the model call's span")
    traces = faults_key_traces(dev.key, [*ARTIFACTS, dev.log_text()], [dev.state_dir], list(dev.otlp.spans))
    assert traces == []
    assert SECRET_VALUE not in dev.log_text()
