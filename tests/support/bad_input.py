"""The bad-input tier's ingress: a real ingress on a real socket, with small limits, forwarding to
real shims running ``cat`` and ``env; cat`` (used by ``tests/reliability/test_bad_input.py`` and
``test_fuzz.py``). As in ``clrk dev``, the ingress signs what it forwards and the shims hold their
namespace's request key."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from clrk.ingress import AgentTarget, CallerKeys, IngressSettings, InProcessForwarder, create_app
from clrk_runtime.protocol.keys import namespace_key
from clrk_runtime.server.app import ShimApp
from clrk_runtime.server.protocols import Implementation, http_protocol
from clrk_runtime.service.runtime import AgentRuntime
from clrk_runtime.settings import RuntimeSettings
from tests.support.serving import uvicorn_serving
from tests.support.threaded import in_thread

__all__ = [
    "BAD_INPUT_AGENT",
    "BAD_INPUT_BODY_TIMEOUT",
    "BAD_INPUT_ENV_AGENT",
    "BAD_INPUT_HEAD_TIMEOUT",
    "BAD_INPUT_MAX_BODY",
    "BAD_INPUT_SANDBOX_UIDS",
    "BadInputIngress",
    "bad_input_ingress_with",
]

BAD_INPUT_AGENT = "default/cat"
"""Echoes its stdin: the CloudEvent envelope the shim built."""
BAD_INPUT_ENV_AGENT = "default/env"
"""Prints its whole environment, then its stdin: whatever leaked into the agent shows."""
BAD_INPUT_MAX_BODY = 4096
BAD_INPUT_BODY_TIMEOUT = 1.0
BAD_INPUT_HEAD_TIMEOUT = 0.5
BAD_INPUT_SANDBOX_UIDS = range(50300, 50556)
"""Otherwise unused uids for the agents, so that their processes can be counted."""
_PLATFORM_KEY = b"the-bad-input-tier's-platform-key"


@dataclass(frozen=True)
class BadInputIngress:
    """A real ingress on 127.0.0.1:<port>, forwarding to real shims (``cat`` and ``env; cat``)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _bad_input_runtime(root: Path, agent: str, command: list[str]) -> AgentRuntime:
    key_file = root / "request.key"  # both agents are in namespace default
    key_file.touch(mode=0o600)  # the agents run as other uids: theirs to use, not to read
    key_file.write_bytes(namespace_key(_PLATFORM_KEY, "request", "default"))
    return AgentRuntime(
        RuntimeSettings(
            command=command,
            sandbox="plain",
            temp_root=root,
            agent=agent,
            sandbox_uid=BAD_INPUT_SANDBOX_UIDS.start,
            sandbox_uids=len(BAD_INPUT_SANDBOX_UIDS),
            timeout=10,
            request_key_file=key_file,
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
        forwarder = InProcessForwarder(platform_key=_PLATFORM_KEY)
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
