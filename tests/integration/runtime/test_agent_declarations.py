"""What an agent declares or plants for the shim to read, through a real ``clrk-shim`` process (run
as root here: each sandbox has a uid of its own), for both sandbox kinds.

``$CLRK_METADATA_RESPONSE_HEADERS`` is a path the agent controls. Before, the shim opened it as
root on its event loop: a FIFO there froze the whole shim (no answer, no ``/healthz``), a symlink
made root read any file and honour its ``Status:`` line, and a control character in a declared
``Content-Type`` or ``Status: 204`` with a body dropped the connection with no answer. Each case
now gets its answer, with what could not be honoured left out and a warning naming the invocation
in the shim's log; the shim answers other requests meanwhile. Last, a request head over 16 KiB in
one read gets 431 (it got 200).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.rawhttp import read_until_closed
from tests.support.runtime import KINDS, SANDBOX_UID, SANDBOX_UIDS, agent, sandbox_processes, shim_command

ANSWER_LIMIT = 30.0
"""Seconds any one answer may take here: far more than it needs (the FIFO froze the shim for good)."""


@dataclass
class RunningShim:
    url: str
    root: Path
    log: list[str] = field(default_factory=list)

    def log_text(self) -> str:
        return "".join(self.log)


@pytest.fixture(scope="module", params=KINDS)
def shim(request: pytest.FixtureRequest) -> Iterator[RunningShim]:
    """``clrk-shim --sandbox KIND -- trespass.sh`` on 127.0.0.1:0; its temp root must end empty."""
    root = Path(tempfile.mkdtemp(prefix="clrk-test-declared-"))
    root.chmod(0o711)
    env = {
        "PATH": os.environ["PATH"],
        "CLRK_TEMP_ROOT": str(root),
        "CLRK_SANDBOX_UID": str(SANDBOX_UID),
        "CLRK_SANDBOX_UIDS": str(SANDBOX_UIDS),
        "CLRK_STDERR_LOG_CAP": "65536",
    }
    argv = [
        shim_command(),
        "--port",
        "0",
        "--host",
        "127.0.0.1",
        "--sandbox",
        request.param,
        "--",
        agent("trespass.sh"),
    ]
    process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    log: list[str] = []
    port = None
    for line in process.stderr:
        log.append(line)
        if match := re.search(r"running on http://[\d.]+:(\d+)", line):
            port = int(match.group(1))
            break
    reader = threading.Thread(target=lambda: log.extend(process.stderr or []), daemon=True)
    reader.start()
    try:
        assert port, "clrk-shim did not start:\n" + "".join(log)
        yield RunningShim(f"http://127.0.0.1:{port}", root, log)
    finally:
        process.terminate()
        try:
            process.wait(30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        reader.join(5)
        process.stderr.close()
        leftovers = list(root.iterdir())
        shutil.rmtree(root, ignore_errors=True)
    assert leftovers == [], f"the shim left files behind: {leftovers}"
    assert sandbox_processes() == []


@pytest.fixture(scope="module")
def root_only_headers() -> Iterator[Path]:
    """A root-only folder holding a ``headers`` file that declares ``Status: 201``."""
    folder = Path(tempfile.mkdtemp(prefix="clrk-test-root-only-", dir="/var/tmp"))
    (folder / "headers").write_text("Status: 201\nContent-Type: text/x-root-secret\n")
    (folder / "headers").chmod(0o600)
    yield folder
    shutil.rmtree(folder)


def _invoke(shim: RunningShim, **data: object) -> httpx.Response:
    return httpx.post(shim.url + "/", json=data, timeout=ANSWER_LIMIT)


def _warned(shim: RunningShim, response: httpx.Response, what: str) -> None:
    """The shim logged a warning naming this invocation and ``what``."""
    invocation = response.headers["x-clrk-invocation-id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any("WARNING" in line and invocation in line and what in line for line in list(shim.log)):
            return
        time.sleep(0.02)
    raise AssertionError(f"no warning for {invocation} about {what!r} in:\n{shim.log_text()[-3000:]}")


def _answered_as_undeclared(response: httpx.Response, mode: str) -> None:
    """200, the agent's own body, its type sniffed: as if it had declared nothing."""
    assert response.status_code == 200, response.text
    assert response.json() == {"mode": mode}
    assert response.headers["content-type"] == "application/json"


def test_a_fifo_as_the_headers_file_holds_up_neither_its_answer_nor_anyone_elses(shim: RunningShim) -> None:
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        fifo = pool.submit(_invoke, shim, mode="headers-fifo")
        other = pool.submit(_invoke, shim, mode="plain")
        health = pool.submit(httpx.get, shim.url + "/healthz", timeout=ANSWER_LIMIT)
        answers = fifo.result(), other.result(), health.result()
    _answered_as_undeclared(answers[0], "headers-fifo")
    _answered_as_undeclared(answers[1], "plain")
    assert answers[2].status_code == 200
    _warned(shim, answers[0], "not a regular file (a FIFO)")
    assert httpx.get(shim.url + "/healthz", timeout=ANSWER_LIMIT).status_code == 200


def test_a_symlink_to_a_root_only_file_is_not_read(shim: RunningShim, root_only_headers: Path) -> None:
    response = _invoke(shim, mode="headers-symlink", target=str(root_only_headers / "headers"))
    _answered_as_undeclared(response, "headers-symlink")
    assert "x-root-secret" not in response.text
    _warned(shim, response, "a symlink")


def test_meta_swapped_for_a_symlink_to_a_root_only_folder_is_not_read(
    shim: RunningShim, root_only_headers: Path
) -> None:
    """Plain: the agent owns its sandbox's directory and can swap ``meta``; bubblewrap binds it
    (the swap fails, and the agent declared nothing)."""
    response = _invoke(shim, mode="headers-meta-symlink", target=str(root_only_headers))
    _answered_as_undeclared(response, "headers-meta-symlink")
    assert (root_only_headers / "headers").read_text().startswith("Status: 201"), "and root's file is untouched"


def test_a_directory_as_the_headers_file(shim: RunningShim) -> None:
    response = _invoke(shim, mode="headers-directory")
    _answered_as_undeclared(response, "headers-directory")
    _warned(shim, response, "not a regular file (a directory)")


def test_a_huge_headers_file_is_not_read(shim: RunningShim) -> None:
    """256 MiB (sparse) starting with ``Status: 201``: over the 8 KiB read at most, so ignored whole."""
    response = _invoke(shim, mode="headers-huge")
    _answered_as_undeclared(response, "headers-huge")
    _warned(shim, response, "over the 8192 read at most")


@pytest.mark.parametrize(
    "value",
    ["text/plain\\0001x", "text/plain\\0000", "text/plain\\0177", "text/pl\\0351in"],
    ids=["control-1", "nul", "del", "latin-1"],
)
def test_a_content_type_that_is_no_header_value_is_sniffed_instead(shim: RunningShim, value: str) -> None:
    response = _invoke(shim, mode="content-type", value=value)
    _answered_as_undeclared(response, "content-type")
    _warned(shim, response, "not a valid header value")


@pytest.mark.parametrize("status", ["204", "304"])
def test_a_status_that_forbids_a_body_is_ignored_when_there_is_one(shim: RunningShim, status: str) -> None:
    response = _invoke(shim, mode="status", value=status)
    _answered_as_undeclared(response, "status")
    _warned(shim, response, f"Status: {status} ignored")


def test_a_status_204_with_no_body_is_honoured(shim: RunningShim) -> None:
    response = _invoke(shim, mode="status-empty", value="204")
    assert response.status_code == 204 and response.content == b""


def test_a_declared_type_and_status_still_work(shim: RunningShim) -> None:
    response = _invoke(shim, mode="content-type", value="text/csv; charset=utf-8")
    assert response.status_code == 200 and response.headers["content-type"] == "text/csv; charset=utf-8"
    created = _invoke(shim, mode="status", value="201 Created")
    assert created.status_code == 201


def test_a_stderr_flood_is_logged_up_to_its_cap(shim: RunningShim) -> None:
    """2000 lines of 1 KiB (about 2 MiB) with ``CLRK_STDERR_LOG_CAP=65536``: 63 lines logged, one
    saying how many bytes were dropped; the answer comes as usual."""
    response = _invoke(shim, mode="stderr-flood", many=2000)
    _answered_as_undeclared(response, "stderr-flood")
    invocation = response.headers["x-clrk-invocation-id"]
    _warned(shim, response, "bytes dropped from the log past its cap of 65536 bytes")
    logged = [line for line in list(shim.log) if f"[{invocation}] 0000" in line]
    assert len(logged) == 65536 // 1025
    dropped = re.search(rf"\[{invocation}\] stderr: (\d+) bytes dropped", shim.log_text())
    assert dropped is not None and int(dropped.group(1)) == 2000 * 1025 - len(logged) * 1025


def test_a_64_KiB_header_in_one_read_gets_431(shim: RunningShim) -> None:
    port = int(shim.url.rsplit(":", 1)[1])
    head = b"POST / HTTP/1.1\r\nHost: shim\r\nContent-Length: 2\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n{}"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        received, closed = read_until_closed(sock)
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line.split()[1] == b"431" and closed, received[:300]
    error = json.loads(rest.partition(b"\r\n\r\n")[2])["error"]
    assert error["type"] == "request_head_too_large" and "x-big" in error["message"]
    assert error["invocationId"], "the shim's rule: every answer has an invocation id"
    assert httpx.get(shim.url + "/healthz", timeout=ANSWER_LIMIT).status_code == 200
