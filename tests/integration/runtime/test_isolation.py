"""What an agent can see: its allow-listed environment, its own files, nothing of the shim's."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from clrk_runtime.protocol.tokens import verify
from clrk_runtime.sandbox.sandboxes import NOBODY
from clrk_runtime.service.runtime import AgentRuntime
from tests.integration.runtime.egress import barrier_server, line_server
from tests.support.runtime import (
    AGENTS,
    HAS_BWRAP,
    KINDS,
    SANDBOX_RANGE,
    agent,
    settings_for,
)

SECRET = "hunter2-do-not-leak"
ALLOWED = {
    "PATH",
    "HOME",
    "TMPDIR",
    "PWD",  # set by the agent's own shell
    "SHLVL",
    "_",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "https_proxy",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "CLRK_METADATA_INVOCATION_ID",
    "CLRK_METADATA_AGENT",
    "CLRK_METADATA_NAMESPACE",
    "CLRK_METADATA_NAME",
    "CLRK_METADATA_DEADLINE",
    "CLRK_METADATA_RESPONSE_HEADERS",
    "TRACEPARENT",  # when a trace is recorded (an earlier test may install a tracer provider)
    "PEEK_PID",
}


@pytest.mark.parametrize("kind", KINDS)
async def test_agent_sees_only_the_allow_list(kind: str, shim_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIM_SECRET_TOKEN", SECRET)
    settings = settings_for(
        kind,
        shim_root,
        [agent("env.sh")],
        agent_env={"PEEK_PID": str(os.getpid())},
        egress_proxy="127.0.0.1:9",
        egress_token_key="k",
        ca_bundle=Path("/etc/ssl/certs/ca-certificates.crt"),
    )
    async with AgentRuntime(settings) as runtime:
        response = await runtime.handle({}, b"{}")
    assert response.status == 200, response.body
    text = response.body.decode()
    env_part, _, proc_part = text.partition("--- /proc/")
    names = {line.split("=", 1)[0] for line in env_part.splitlines() if "=" in line}
    assert names <= ALLOWED
    assert {"CLRK_METADATA_DEADLINE", "HTTPS_PROXY", "SSL_CERT_FILE"} <= names
    assert SECRET not in text  # neither in its env nor through /proc/<shim pid>/environ
    assert "environ:\n" in proc_part
    uid = re.search(r"--- uid=(\d+)", text)
    assert uid is not None, text
    if kind == "bwrap":
        assert int(uid.group(1)) == NOBODY  # whatever host uid of the range maps to it
    else:
        assert int(uid.group(1)) in SANDBOX_RANGE  # a uid of its own


@pytest.mark.parametrize("kind", KINDS)
async def test_concurrent_sandboxes_cannot_see_each_other(kind: str, shim_root: Path) -> None:
    """Each leaves a mark in its HOME, TMPDIR and working dir; while both run, neither finds the
    other's. The plain backend shares the host's filesystem: its wall is each sandbox's own uid
    (run as root) and 0700 dirs."""
    if kind == "plain" and os.geteuid() != 0:
        pytest.skip("plain sandboxes get a uid of their own only when the shim is root")
    async with barrier_server(parties=2) as port:
        settings = settings_for(kind, shim_root, [agent("isolation.sh")], egress_proxy=f"127.0.0.1:{port}")
        async with AgentRuntime(settings) as runtime:
            first, second = await asyncio.gather(runtime.handle({}, b"{}"), runtime.handle({}, b"{}"))
    for response in (first, second):
        assert response.status == 200, response.body
        assert b"other=" in response.body  # both were alive at once
        assert b"found=none" in response.body
    if kind == "plain":
        uids = {re.search(rb"uid=(\d+)", response.body).group(1) for response in (first, second)}  # type: ignore[union-attr]
        assert len(uids) == 2, "two live sandboxes, two uids"


@pytest.mark.skipif(not HAS_BWRAP, reason="bwrap does not work")
async def test_bwrap_reaches_only_the_egress_proxy(shim_root: Path) -> None:
    async with line_server() as (egress_port, received), line_server() as (other_port, _):
        settings = settings_for(
            "bwrap",
            shim_root,
            [agent("bridge.sh")],
            egress_proxy=f"127.0.0.1:{egress_port}",
            egress_token_key="shared-key",
            agent_env={"DIRECT_PORT": str(other_port)},
        )
        async with AgentRuntime(settings) as runtime:
            response = await runtime.handle({}, b"{}")
    assert response.status == 200, response.body
    invocation_id = response.header("X-Clrk-Invocation-Id")
    assert b"proxy: pong" in response.body
    assert b"direct: failed" in response.body
    # The gateway sees this invocation's own credentials, signed with the shared key.
    url = urlsplit(received[0])
    assert (url.hostname, url.port) == ("127.0.0.1", 3128)
    claims = verify(unquote(url.password or ""), b"shared-key", now=time.time(), invocation_id=invocation_id)
    assert claims.agent == "team/bot"


@pytest.mark.skipif(not HAS_BWRAP, reason="bwrap does not work")
async def test_binds_are_visible_read_only(shim_root: Path) -> None:
    script = "test -x /app/bin/echo.sh && echo seen; touch /app/bin/new /new 2>/dev/null || echo read-only"
    binds = [f"{AGENTS}:/app/bin"]  # /app does not exist on the host
    settings = settings_for("bwrap", shim_root, ["sh", "-c", script], binds=binds)
    async with AgentRuntime(settings) as runtime:
        response = await runtime.handle({}, b"{}")
    assert response.body == b"seen\nread-only\n"
