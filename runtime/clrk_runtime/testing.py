"""A harness for agent authors: run your entrypoint through the real shim, in-process.

    from clrk_runtime.testing import invoke

    def test_echo():
        result = invoke(["./agent.sh"], {"q": "hi"}, timeout=5)
        assert result.status == 200
        assert result.json() == {"answer": "hi"}

Real sandboxes and real processes, and the very path a request takes in ``clrk-shim`` from the
moment its HTTP server has parsed it: the same app, the same envelope builder, the same
:class:`AgentRuntime`; only the socket is left out. Inside a running event loop use
:func:`ainvoke`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clrk_runtime.invocation.running import AGENT_LOGGER
from clrk_runtime.protocol.headers import INVOCATION_HEADER
from clrk_runtime.server.app import Message, ShimApp
from clrk_runtime.service.runtime import AgentRuntime
from clrk_runtime.settings import RuntimeSettings

__all__ = ["Result", "ainvoke", "invoke"]


@dataclass(frozen=True, slots=True)
class Result:
    status: int
    body: bytes
    headers: dict[str, str]
    """Response headers, names lower-cased."""
    stderr: str
    """What the agent wrote to stderr (as logged, line by line)."""

    @property
    def invocation_id(self) -> str:
        return self.headers.get(INVOCATION_HEADER.lower(), "")

    def json(self) -> Any:
        return json.loads(self.body)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _request(data: Any, headers: Mapping[str, str] | None) -> tuple[dict[str, str], bytes]:
    given = {k.lower(): v for k, v in (headers or {}).items()}
    if isinstance(data, bytes):
        given.setdefault("content-type", "application/octet-stream")
        return given, data
    given.setdefault("content-type", "application/json")
    return given, json.dumps(data).encode()


async def ainvoke(
    command: Sequence[str],
    data: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    **settings_overrides: Any,
) -> Result:
    """Start a runtime for ``command``, send it ``data`` (JSON, or bytes as-is), stop it."""
    settings = RuntimeSettings(command=list(command), **settings_overrides)
    request_headers, body = _request(data, headers)
    logger = logging.getLogger(AGENT_LOGGER)
    capture = _Capture()
    level = logger.level
    logger.addHandler(capture)
    logger.setLevel(logging.INFO)
    raw_headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in request_headers.items()]
    raw_headers.append((b"content-length", str(len(body)).encode()))

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        async with AgentRuntime(settings) as runtime:
            response = await ShimApp(runtime, lifespan=False).respond("POST", "/", raw_headers, receive)
    finally:
        logger.removeHandler(capture)
        logger.setLevel(level)
    invocation_id = response.header(INVOCATION_HEADER) or ""
    prefix = f"[{invocation_id}] "
    stderr = "".join(line.removeprefix(prefix) + "\n" for line in capture.lines if line.startswith(prefix))
    return Result(
        status=response.status,
        body=response.body,
        headers={k.lower(): v for k, v in response.headers},
        stderr=stderr,
    )


def invoke(
    command: Sequence[str],
    data: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    **settings_overrides: Any,
) -> Result:
    """Synchronous :func:`ainvoke`, for plain test functions."""
    return asyncio.run(ainvoke(command, data, headers=headers, **settings_overrides))
