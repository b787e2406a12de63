"""The real Claude Code CLI through the gateway, against the fake upstream.

The CLI holds only a placeholder key; the upstream sees the real one; nothing an agent or an
operator can read (logs, spans, response bodies, the state directory) carries the real key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from clrk.api.egress import EgressConfig
from tests.support.egress import Egress, make_config

CLAUDE = Path(__file__).resolve().parents[3] / ".venv" / "bin" / "claude"
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CLAUDE.exists() and not shutil.which("claude"), reason="no claude CLI"),
]


async def run_claude(egress: Egress, tmp: Path, proxy_url: str, prompt: str = "say hi", quiet: bool = True) -> Any:
    home, tmpdir, work = tmp / "home", tmp / "tmp", tmp / "work"
    for d in (home, tmpdir, work):
        d.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TMPDIR": str(tmpdir),
        "ANTHROPIC_API_KEY": "placeholder-key",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "1",
        "HTTPS_PROXY": proxy_url,
        "NODE_EXTRA_CA_CERTS": str(egress.bundle),
    }
    if not quiet:
        del env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"]
    exe = str(CLAUDE) if CLAUDE.exists() else str(shutil.which("claude"))
    proc = await asyncio.create_subprocess_exec(
        exe, "-p", "--bare", "--no-session-persistence", "--tools", "", "--output-format", "json",
        "--model", "claude-sonnet-4-5", "--json-schema", json.dumps(SCHEMA),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=work, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(prompt.encode()), 60)
    return proc.returncode, out.decode(), err.decode()


def _scan_for(secret: str, root: Path) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and secret.encode() in path.read_bytes():
            found.append(path)
    return found


async def test_claude_cli_through_the_gateway(egress: Egress, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    egress.fake.behaviour.structured_output = {"answer": "forty-two"}
    code, out, err = await run_claude(egress, tmp_path / "run", egress.proxy_url("inv-cli"))
    assert code == 0, (out, err)
    result = json.loads(out)
    assert result["is_error"] is False, result
    assert result["structured_output"] == {"answer": "forty-two"}

    requests = egress.fake.messages_requests()
    assert requests, "the CLI never reached the upstream"
    for req in egress.fake.requests:
        assert req.headers.get("x-api-key") == egress.real_key
        assert b"placeholder-key" not in req.body
        assert "placeholder-key" not in json.dumps(req.headers)
    assert requests[0].target.endswith("?beta=true")
    assert requests[0].json()["stream"] is True

    calls = egress.gateway.usage.calls("inv-cli")
    assert calls and calls[-1].usage.stop_reason == "tool_use"
    spans = egress.spans.get_finished_spans()
    assert len(spans) == len(calls)

    key = egress.real_key
    assert key not in out and key not in err
    for record in caplog.records:
        assert key not in record.getMessage()
        assert key not in str(record.__dict__)
    for span in spans:
        assert key not in span.to_json()
    assert _scan_for(key, egress.state_dir) == []
    assert _scan_for(key, tmp_path / "run") == []


@pytest.fixture
def egress_config() -> EgressConfig:
    return make_config(budget_tokens=80_000)


async def test_claude_cli_stopped_by_the_budget(egress: Egress, tmp_path: Path) -> None:
    # The CLI asks for max_tokens 32000; each answer spends 30k: the budget admits two calls.
    egress.fake.behaviour.structured_output = {"answer": "x"}
    egress.fake.behaviour.output_tokens = 30_000
    results = []
    for i in range(3):
        code, out, _ = await run_claude(egress, tmp_path / f"r{i}", egress.proxy_url(f"inv-{i}"))
        results.append((code, json.loads(out)))
    assert results[0][1]["is_error"] is False
    last_code, last = results[-1]
    assert last["is_error"] is True
    assert last_code == 1
    assert last.get("api_error_status") == 429, last
    assert len(egress.fake.messages_requests()) == 2


async def test_claude_cli_nonessential_traffic_is_refused_fast(
    egress: Egress, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without DISABLE_NONESSENTIAL_TRAFFIC the CLI makes more calls; none may stall it."""
    egress.fake.behaviour.structured_output = {"answer": "x"}
    started = asyncio.get_running_loop().time()
    code, out, err = await run_claude(egress, tmp_path, egress.proxy_url("inv-n"), quiet=False)
    elapsed = asyncio.get_running_loop().time() - started
    assert code == 0, (out, err)
    assert json.loads(out)["structured_output"] == {"answer": "x"}
    assert elapsed < 4.0
    # its other calls (settings, event logging …) got the gateway's 403 at once, and never the key
    assert {r.path for r in egress.fake.requests} == {"/v1/messages"}
    refused = [r.getMessage() for r in caplog.records if r.name == "clrk.egress.paths"]
    assert any("/api/" in message for message in refused), refused
