"""Reading streamed answers (Server-Sent Events) in tests, and serving the shim the way
``clrk-shim`` does.

Events are parsed with httpx-sse, as clrk's own readers do; :func:`blocks` reads the raw blocks
instead, for what an SSE client drops (the opening comment, heartbeats).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from httpx_sse import EventSource, ServerSentEvent

from clrk_runtime.protocol.streams import Outcome
from clrk_runtime.server.protocols import Implementation, http_protocol
from tests.support.readable import agents_dir
from tests.support.serving import uvicorn_serving

__all__ = [
    "GATED",
    "agent_manifests",
    "blocks",
    "eventually",
    "gate_dir",
    "outcome",
    "production_serving",
    "read_events",
]

GATED = agents_dir() / "gated.sh"
"""``gated.sh GATE [CODE]``: prints "first", waits for the file GATE, prints "second" and "last"
(no newline), exits CODE. From a copy every sandbox uid can read when the checkout is not (a
clone under a 0700 temp dir)."""
_AGENT = """\
apiVersion: clrk.dev/v1alpha1
kind: TaskAgent
metadata:
  name: {name}
spec:
  template:
    spec:
      image: registry.example.com/{name}:1
      command: {command}
  timeout: 60s
  maxConcurrency: {concurrency}
---
"""


def agent_manifests(agents: dict[str, list[str]], concurrency: int = 8) -> str:
    """TaskAgents (namespace default) running each command, 60 s deadline, as YAML text."""
    return "".join(
        _AGENT.format(name=name, command=json.dumps(command), concurrency=concurrency)
        for name, command in agents.items()
    )


@asynccontextmanager
async def production_serving(app: Any, implementation: Implementation = "auto") -> AsyncIterator[int]:
    """``app`` under uvicorn on 127.0.0.1:0 with the HTTP protocol ``clrk-shim`` serves with."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="on",
        log_level="warning",
        http=http_protocol(10, invocation_ids=True, implementation=implementation),
    )
    async with uvicorn_serving(config) as port:
        yield port


async def read_events(response: httpx.Response) -> list[ServerSentEvent]:
    """Every event of a streamed answer, to its end."""
    return [event async for event in EventSource(response).aiter_sse()]


def outcome(events: list[ServerSentEvent]) -> Outcome:
    """The last event, which must be the outcome (and the only one)."""
    assert [e.event for e in events].count("outcome") == 1, events
    assert events[-1].event == "outcome", events
    return Outcome.parse(events[-1].data)


async def blocks(response: httpx.Response) -> AsyncIterator[str]:
    """Each block of a streamed answer (an event or a comment), without its blank line."""
    pending = ""
    async for text in response.aiter_text():
        pending += text
        while "\n\n" in pending:
            block, pending = pending.split("\n\n", 1)
            yield block


async def eventually(check: Callable[[], bool], within: float = 20.0) -> None:
    """Return once ``check()`` holds; fail if it does not within ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            while not check():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"never true within {within}s: {check}") from None


@contextmanager
def gate_dir() -> Iterator[Path]:
    """A folder every sandbox can read (bubblewrap's included: not under /tmp), where a test makes
    the gate files its agents wait for."""
    folder = Path(tempfile.mkdtemp(prefix="clrk-test-gate-", dir="/var/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
