"""Agents that point what the shim reads or removes at its close somewhere else, through a real
ingress on a real socket in front of shims run as root, as ``clrk dev`` runs them here (each
sandbox a uid of its own), for both sandbox kinds.

* An agent replaces its HOME, TMPDIR, work dir and ``meta`` with symlinks to a folder of root's
  files: the shim removes its sandbox without following them (every file there survives, every
  sandbox directory is gone after).
* An agent leaves a folder of many entries: its removal is held in the kernel (a fanotify gate on
  that folder, :mod:`tests.support.fsgate`) while ``/healthz`` and a probe of the other shim are
  answered; the answer comes once the gate opens, and nothing of the sandbox is left.
* A ``Content-Type`` with a control character, or ``Status: 204`` with a body, declared by the
  agent: the caller gets the answer through the ingress (before, no answer at all).
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from clrk.ingress import AgentTarget, CallerKeys, IngressSettings, InProcessForwarder, create_app
from clrk_runtime.sandbox.backends import bwrap_works
from clrk_runtime.server.app import ShimApp
from clrk_runtime.server.protocols import http_protocol
from clrk_runtime.service.runtime import AgentRuntime
from clrk_runtime.settings import RuntimeSettings
from tests.support.fsgate import OpenGate
from tests.support.processes import live_processes
from tests.support.readable import agents_dir
from tests.support.serving import uvicorn_serving
from tests.support.threaded import in_thread

UIDS = {"plain": range(51700, 51828), "bwrap": range(51828, 51956)}
"""Otherwise unused uids, one range per shim, so that their processes can be counted."""
KINDS = ["plain", "bwrap"] if bwrap_works(UIDS["bwrap"].start, UIDS["bwrap"].start, os.geteuid() == 0) else ["plain"]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the shim runs as root here, as clrk dev does")
ANSWER_LIMIT = 60.0


@dataclass(frozen=True)
class Ingress:
    url: str
    roots: dict[str, Path]
    """Each kind's ``temp_root``: its shim's own folder in it holds its sandboxes' directories."""


@asynccontextmanager
async def _serving(roots: dict[str, Path]) -> AsyncIterator[Ingress]:
    runtimes = {
        kind: AgentRuntime(
            RuntimeSettings(
                command=[str(agents_dir() / "trespass.sh")],
                sandbox=kind,
                temp_root=roots[kind],
                agent=f"default/trespass-{kind}",
                sandbox_uid=UIDS[kind].start,
                sandbox_uids=len(UIDS[kind]),
                timeout=ANSWER_LIMIT,
            )
        )
        for kind in KINDS
    }
    for runtime in runtimes.values():
        await runtime.start()
    try:
        forwarder = InProcessForwarder()
        forwarder.set_apps(
            {
                f"default/trespass-{kind}": (
                    AgentTarget(f"default/trespass-{kind}", ANSWER_LIMIT),
                    ShimApp(runtime, lifespan=False),
                )
                for kind, runtime in runtimes.items()
            }
        )
        settings = IngressSettings()
        app = create_app(forwarder, CallerKeys(open_mode=True), settings)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            lifespan="off",
            log_level="warning",
            access_log=False,
            http=http_protocol(settings.head_timeout_seconds),
        )
        async with uvicorn_serving(config) as port:
            yield Ingress(f"http://127.0.0.1:{port}", roots)
    finally:
        for runtime in runtimes.values():
            await runtime.stop()


@pytest.fixture(scope="module")
def ingress() -> Iterator[Ingress]:
    """The ingress (open mode) with a plain and, where it works, a bubblewrap shim behind it."""
    roots = {kind: Path(tempfile.mkdtemp(prefix=f"clrk-trespass-{kind}-")) for kind in KINDS}
    for root in roots.values():
        root.chmod(0o711)
    try:
        with in_thread(_serving(roots)) as running:
            yield running
    finally:
        for root in roots.values():
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def victim() -> Iterator[Path]:
    """A folder of root's files outside any sandbox (as the budgets database's folder is)."""
    folder = Path(tempfile.mkdtemp(prefix="clrk-trespass-victim-", dir="/var/tmp"))
    folder.chmod(0o755)
    (folder / "budgets.sqlite3").write_bytes(b"SQLite format 3\x00")
    (folder / "inner").mkdir()
    (folder / "inner" / "keep").write_text("keep")
    yield folder
    shutil.rmtree(folder)


def _invoke(ingress: Ingress, kind: str, **data: object) -> httpx.Response:
    headers = {"X-Clrk-TaskAgent": f"default/trespass-{kind}"}
    return httpx.post(ingress.url + "/", json=data, headers=headers, timeout=ANSWER_LIMIT)


def _tree(folder: Path) -> dict[str, bytes | None]:
    return {
        str(path.relative_to(folder)): None if path.is_dir() else path.read_bytes()
        for path in sorted(folder.rglob("*"))
    }


def _nothing_left(ingress: Ingress, kind: str) -> None:
    assert list(ingress.roots[kind].glob("*/*")) == [], "every sandbox directory is gone"
    assert live_processes(UIDS[kind]) == {}


@pytest.mark.parametrize("kind", KINDS)
def test_home_tmpdir_work_and_meta_swapped_for_symlinks_to_roots_files(
    ingress: Ingress, kind: str, victim: Path
) -> None:
    before = _tree(victim)
    response = _invoke(ingress, kind, mode="swap-dirs", target=str(victim))
    assert response.status_code == 200, response.text
    assert _tree(victim) == before, "nothing the symlinks point at was removed"
    _nothing_left(ingress, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_healthz_is_answered_while_a_sandbox_of_many_entries_is_being_removed(ingress: Ingress, kind: str) -> None:
    many = 20_000
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(_invoke, ingress, kind, mode="many", many=many)
        ready = _until(lambda: next(ingress.roots[kind].glob("*/*/meta/ready"), None), "the agent's many entries")
        folder = ready.parent / "many"
        agent = next(pid for pid, cmd in live_processes(UIDS[kind]).items() if cmd.strip().endswith("/trespass.sh"))
        with OpenGate(str(folder)) as gate:
            os.kill(agent, signal.SIGUSR1)  # the agent exits: its sandbox is closed and removed
            assert gate.held.wait(ANSWER_LIMIT), "something opened the folder to remove it"
            health = httpx.get(ingress.url + "/healthz", timeout=10)
            other = "bwrap" if kind == "plain" and "bwrap" in KINDS else "plain"
            probe = _invoke(ingress, other, mode="plain") if other != kind else None
            # (looked up by name: listing the folder would open it, and wait at the gate too)
            assert (folder / "1").exists() and (folder / str(many)).exists(), "the removal is still held"
            assert not answer.done()
            gate.release()
        response = answer.result(ANSWER_LIMIT)
    assert health.status_code == 200
    assert probe is None or probe.status_code == 200
    assert os.getpid() not in gate.openers, "no walk of the folder ran in the shim's own process"
    assert response.status_code == 200, response.text
    _nothing_left(ingress, kind)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("mode", "value"),
    [("content-type", "text/plain\\0001x"), ("content-type", "a\\0000b"), ("status", "204"), ("status", "304")],
    ids=["control-character", "nul", "204-with-a-body", "304-with-a-body"],
)
def test_declared_headers_http_cannot_carry_still_get_the_answer(
    ingress: Ingress, kind: str, mode: str, value: str
) -> None:
    response = _invoke(ingress, kind, mode=mode, value=value)
    assert response.status_code == 200, response.text
    assert response.json() == {"mode": mode}
    assert response.headers["content-type"] == "application/json"
    _nothing_left(ingress, kind)


def _until(predicate: Callable[[], Path | None], what: str) -> Path:
    deadline = time.monotonic() + ANSWER_LIMIT
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
