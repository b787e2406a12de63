"""A request head over the documented cap (16 KiB, ``clrk_runtime.server.protocols.HEAD_CAP``)
gets 431 with the JSON error body however its bytes arrive: in one read, streamed, or pipelined
behind a good request; the server answers the next connection as before.

The shim's ASGI app under uvicorn with the protocol class, on 127.0.0.1 port 0, spoken to with raw
sockets, with h11 and, where it is installed, httptools (before: a whole head in one read was
accepted by both, 200 for a 64 KiB header value).
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import uvicorn

from clrk_runtime.server.app import ShimApp
from clrk_runtime.server.protocols import HEAD_CAP, Implementation, http_protocol, httptools_installed
from clrk_runtime.service.runtime import AgentRuntime
from clrk_runtime.settings import RuntimeSettings
from tests.support.rawhttp import READ_LIMIT, read_until_closed
from tests.support.serving import uvicorn_serving
from tests.support.threaded import in_thread

IMPLEMENTATIONS = [
    "h11",
    pytest.param("httptools", marks=pytest.mark.skipif(not httptools_installed(), reason="httptools not installed")),
]
PROBE = b"GET /healthz HTTP/1.1\r\nHost: shim\r\n\r\n"
"""A request the shim answers 200 without running an agent (its runtime is not started here)."""


@asynccontextmanager
async def _serving(implementation: Implementation) -> AsyncIterator[int]:
    app = ShimApp(AgentRuntime(RuntimeSettings(command=["cat"])), lifespan=False)
    protocol = http_protocol(5.0, invocation_ids=True, implementation=implementation)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="error", http=protocol)
    async with uvicorn_serving(config) as port:
        yield port


@pytest.fixture(scope="module", params=IMPLEMENTATIONS)
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    with in_thread(_serving(request.param)) as running:
        yield running


def _answers(port: int, *chunks: bytes) -> tuple[list[tuple[int, dict[str, str], bytes]], bool]:
    """Send ``chunks`` (one write each) on a fresh connection; the answers, and whether it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=READ_LIMIT) as sock:
        for chunk in chunks:
            sock.sendall(chunk)
        data, closed = read_until_closed(sock)
    answers = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"truncated answer: {data[:200]!r}"
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        size = int(headers["content-length"])
        answers.append((int(status_line.split()[1]), headers, rest[:size]))
        data = rest[size:]
    return answers, closed


def _assert_431(answer: tuple[int, dict[str, str], bytes], names: str) -> None:
    status, headers, body = answer
    assert status == 431, (status, body)
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["type"] == "request_head_too_large"
    assert f"over {HEAD_CAP} bytes" in error["message"] and names in error["message"], error["message"]
    assert error["invocationId"] == headers["x-clrk-invocation-id"], "the shim's rule: every answer has one"


def _still_answers(port: int) -> None:
    answers, _ = _answers(port, PROBE.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    assert [status for status, _, _ in answers] == [200]


def test_a_64_KiB_header_value_in_one_read_gets_431(port: int) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: shim\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n"
    answers, closed = _answers(port, head)
    assert len(answers) == 1 and closed
    _assert_431(answers[0], "the largest: header 'x-big'")
    _still_answers(port)


def test_a_64_KiB_request_target_in_one_read_gets_431(port: int) -> None:
    answers, closed = _answers(port, b"GET /healthz?" + b"q" * 65536 + b" HTTP/1.1\r\nHost: shim\r\n\r\n")
    assert len(answers) == 1 and closed
    _assert_431(answers[0], "the largest: the request-target")


def test_many_small_headers_over_the_cap_in_one_read_get_431(port: int) -> None:
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(200))
    answers, closed = _answers(port, b"GET /healthz HTTP/1.1\r\nHost: shim\r\n" + headers + b"\r\n")
    assert len(answers) == 1 and closed
    _assert_431(answers[0], "bytes")


def test_a_head_over_the_cap_streamed_in_small_writes_gets_431(port: int) -> None:
    """Unfinished, 1 KiB a write, until just past the cap (more after the refusal would be reset)."""
    head = b"GET /healthz HTTP/1.1\r\nHost: shim\r\nX-Big: " + b"a" * (HEAD_CAP + 1024)
    answers, closed = _answers(port, *(head[i : i + 1024] for i in range(0, len(head), 1024)))
    assert [status for status, _, _ in answers] == [431] and closed


def test_a_head_just_under_the_cap_is_served(port: int) -> None:
    start = b"GET /healthz HTTP/1.1\r\nHost: shim\r\nConnection: close\r\nX-Pad: "
    head = start + b"p" * (HEAD_CAP - len(start) - 4) + b"\r\n\r\n"
    assert len(head) == HEAD_CAP
    answers, _ = _answers(port, head)
    assert [status for status, _, _ in answers] == [200]


def test_an_oversized_head_pipelined_behind_a_good_request_is_refused_after_its_answer(port: int) -> None:
    big = b"GET /healthz HTTP/1.1\r\nHost: shim\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n"
    answers, closed = _answers(port, PROBE + big)
    assert [status for status, _, _ in answers] == [200, 431] and closed
    _assert_431(answers[1], "the largest: header 'x-big'")
