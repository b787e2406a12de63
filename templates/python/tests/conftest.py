"""Run this agent's real entrypoint through the real clrk shim, as `clrk dev` and a cluster do.

The sandbox runs as an unprivileged user with a read-only view of the host, so the tests run a
world-readable copy of this folder, bound into the sandbox at the same path. ``tests/bin`` comes
first on the agent's PATH: its ``claude`` is a stand-in that answers without a key or a network.

``agent(data, warm_pool=1, warm_start=True)`` runs it warm-started through the shim, as
``spec.warmStart: true`` does; ``started`` runs it alone, to check the agent's side of warm
start: one line on ``$CLRK_READY_FD`` before it reads its request.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from clrk_runtime.protocol.envelope import build_envelope
from clrk_runtime.protocol.ids import new_invocation_id
from clrk_runtime.testing import Result, invoke

ENTRYPOINT = "agent.py"
WAIT = 30.0
"""Seconds ``started`` waits for the agent's ready line, then for its answer."""
FORK = Path(__file__).resolve().parents[1]
_SKIP = shutil.ignore_patterns(".git", ".venv", "node_modules", "__pycache__", ".pytest_cache")


@pytest.fixture(scope="session")
def fork_copy() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="clrk-agent-test-"))
    try:
        root.chmod(0o755)
        copy = root / "agent"
        shutil.copytree(FORK, copy, ignore=_SKIP)
        for path in [copy, *copy.rglob("*")]:
            path.chmod(path.stat().st_mode | (0o755 if path.is_dir() else 0o444))
        yield copy
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def agent(fork_copy: Path) -> Callable[..., Result]:
    """``agent(data, **settings)``: one invocation; ``settings`` are RuntimeSettings fields,
    e.g. ``agent_env={"NAME": "value"}`` for the manifest's env."""

    def call(data: Any, **settings: Any) -> Result:
        settings.setdefault("binds", [f"{fork_copy}:{fork_copy}"])
        settings.setdefault("agent_path", f"{fork_copy}/tests/bin:/usr/local/bin:/usr/bin:/bin")
        settings.setdefault("timeout", 30)
        return invoke([str(fork_copy / ENTRYPOINT)], data, **settings)

    return call


@pytest.fixture
def started(fork_copy: Path, tmp_path: Path) -> Callable[..., tuple[bytes, subprocess.CompletedProcess[bytes]]]:
    """``started(data, ready=True, env={...})``: the entrypoint run as warm start runs it, without
    the shim, to check its side of the contract. With ``ready``, ``$CLRK_READY_FD`` names the write
    end of a pipe and the envelope is written to stdin only once a line came on it: an agent that
    reads stdin first never gets its request, and the test fails after ``WAIT`` seconds. Without,
    the variable is unset and the envelope waits on stdin from the start, as on a cold start.
    Returns the line (b"" without ``ready``, or when none came) and the finished process."""

    def run(
        data: Any, ready: bool = True, env: Mapping[str, str] | None = None
    ) -> tuple[bytes, subprocess.CompletedProcess[bytes]]:
        scratch = Path(tempfile.mkdtemp(dir=tmp_path))
        (scratch / "home").mkdir()
        (scratch / "tmp").mkdir()
        invocation = new_invocation_id()
        body = json.dumps(data).encode()
        envelope = build_envelope({"content-type": "application/json"}, body, invocation_id=invocation, source="/test")
        agent_env = {
            "PATH": f"{fork_copy}/tests/bin:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(scratch / "home"),
            "TMPDIR": str(scratch / "tmp"),
            "CLRK_METADATA_AGENT": "default/agent",
            "CLRK_METADATA_NAMESPACE": "default",
            "CLRK_METADATA_NAME": "agent",
            "CLRK_METADATA_RESPONSE_HEADERS": str(scratch / "response-headers"),
            **(env or {}),
        }
        read_end, write_end = os.pipe() if ready else (-1, -1)
        if ready:
            agent_env["CLRK_READY_FD"] = str(write_end)
        else:  # started on request: the request's own metadata is in the environment too
            agent_env["CLRK_METADATA_INVOCATION_ID"] = invocation
        process = subprocess.Popen(
            [str(fork_copy / ENTRYPOINT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=agent_env,
            cwd=scratch,
            pass_fds=(write_end,) if ready else (),
        )
        line = b""
        try:
            if ready:
                os.close(write_end)
                line = _first_line(read_end)
            out, err = process.communicate(envelope.body, timeout=WAIT)
        finally:
            if ready:
                os.close(read_end)
            if process.poll() is None:
                process.kill()
                process.communicate()
        return line, subprocess.CompletedProcess(process.args, process.returncode, out, err)

    return run


def _first_line(fd: int) -> bytes:
    """The first line on ``fd``, or what came before its end of file; fails after ``WAIT`` s."""
    got = b""
    deadline = time.monotonic() + WAIT
    while not got.endswith(b"\n"):
        readable, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert readable, f"no line on $CLRK_READY_FD within {WAIT}s (got {got!r})"
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        got += chunk
    return got
