"""The HTTP servers' own refusals (``clrk_runtime.server.protocols``): JSON, and a deadline for the head.

The shim's ASGI app under uvicorn with the protocol class, on 127.0.0.1 port 0, spoken to with raw
sockets; each test runs with h11 and, where it is installed, httptools.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from clrk_runtime.server.app import ShimApp
from clrk_runtime.server.protocols import BAD_REQUEST_MESSAGE, http_protocol, httptools_installed
from clrk_runtime.service.runtime import AgentRuntime
from clrk_runtime.settings import RuntimeSettings
from tests.support.rawhttp import READ_LIMIT, read_until_closed
from tests.support.serving import uvicorn_serving
from tests.support.threaded import in_thread

HEAD_TIMEOUT = 0.3
MARGIN = 2.0
EARLY = 0.01
"""uvloop's timers (libuv's) count whole milliseconds and may fire a fraction of one early."""
"""Slack past the head timeout for the refusal to arrive on a loaded 2-core machine."""
PROBE = b"GET /healthz HTTP/1.1\r\nHost: shim\r\n\r\n"
"""A request the shim answers 200 without running an agent (its runtime is not started here)."""

IMPLEMENTATIONS = [
    "h11",
    pytest.param("httptools", marks=pytest.mark.skipif(not httptools_installed(), reason="httptools not installed")),
]


@dataclass(frozen=True)
class Shim:
    port: int


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, str]:
        assert self.headers["content-type"] == "application/json", self.headers
        error: dict[str, str] = json.loads(self.body)["error"]
        assert error["message"] and error["type"], error
        return error


@asynccontextmanager
async def _serving(implementation: str) -> AsyncIterator[Shim]:
    app = ShimApp(AgentRuntime(RuntimeSettings(command=["cat"])), lifespan=False)
    protocol = http_protocol(HEAD_TIMEOUT, invocation_ids=True, implementation=implementation)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="error", http=protocol)
    async with uvicorn_serving(config) as port:
        yield Shim(port)


@pytest.fixture(scope="module", params=IMPLEMENTATIONS)
def shim(request: pytest.FixtureRequest) -> Iterator[Shim]:
    with in_thread(_serving(request.param)) as running:
        yield running


def _parse(data: bytes) -> list[Answer]:
    answers = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"truncated answer: {data[:200]!r}"
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        size = int(headers["content-length"])
        answers.append(Answer(int(status_line.split()[1]), headers, rest[:size]))
        data = rest[size:]
    return answers


def _exchange(shim: Shim, *chunks: bytes) -> tuple[list[Answer], bool, float]:
    """Send ``chunks`` (separate writes) on a fresh connection; read until closed."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", shim.port), timeout=READ_LIMIT) as sock:
        for chunk in chunks:
            sock.sendall(chunk)
        received, closed = read_until_closed(sock)
    return _parse(received), closed, time.monotonic() - started


def _post(headers: bytes = b"", body: bytes = b"{}") -> bytes:
    head = b"POST / HTTP/1.1\r\nHost: shim\r\nContent-Type: application/json\r\n"
    return head + headers + b"Content-Length: %d\r\n\r\n" % len(body) + body


UNFRAMED = {
    "bare-cr-in-a-header": _post(b"X-Evil: a\rX-Clrk-TaskAgent: default/x\r\n"),
    "nul-in-a-value": _post(b"X-Evil: a\x00b\r\n"),
    "space-in-a-header-name": _post(b"X Evil: a\r\n"),
    "two-content-lengths": _post(b"Content-Length: 99\r\n"),
    "content-length-abc": _post().replace(b"Content-Length: 2", b"Content-Length: abc"),
    "transfer-encoding-gzip": _post(b"Transfer-Encoding: gzip\r\n"),
    "tls-client-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
    "bad-chunk-size": b"POST / HTTP/1.1\r\nHost: shim\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
}


@pytest.mark.parametrize("data", UNFRAMED.values(), ids=UNFRAMED.keys())
def test_what_http_cannot_frame_gets_a_json_400(shim: Shim, data: bytes) -> None:
    answers, closed, _ = _exchange(shim, data)
    assert [answer.status for answer in answers] == [400]
    error = answers[0].error()
    assert (error["type"], error["message"]) == ("bad_request", BAD_REQUEST_MESSAGE)
    assert error["invocationId"] == answers[0].headers["x-clrk-invocation-id"], "the shim's rule: every answer has one"
    assert answers[0].headers["connection"] == "close"
    assert closed


def test_a_head_over_16_KiB_gets_a_json_431(shim: Shim) -> None:
    """h11 caps a head at its buffer (16 KiB); with httptools the protocol class caps it the same
    (a head over the cap in one read: tests/unit/runtime/test_head_cap.py)."""
    head = b"POST / HTTP/1.1\r\nHost: shim\r\nX-Big: " + b"a" * 10_000
    answers, closed, seconds = _exchange(shim, head, b"a" * 10_000)
    assert [(a.status, a.error()["type"]) for a in answers] == [(431, "request_head_too_large")]
    assert closed and seconds < HEAD_TIMEOUT, "refused at once, not at the head timeout"


@pytest.mark.parametrize(
    ("data", "expect"),
    [(b"", []), (b"GET /heal", [408]), (b"POST / HTTP/1.1\r\nHost: shim\r\nContent-Length: 2\r\n", [408])],
    ids=["nothing", "half-a-request-line", "no-blank-line"],
)
def test_a_head_that_never_finishes_is_cut_off(shim: Shim, data: bytes, expect: list[int]) -> None:
    answers, closed, seconds = _exchange(shim, data)
    assert [answer.status for answer in answers] == expect
    for answer in answers:
        assert answer.error()["type"] == "request_timeout"
        assert answer.headers["connection"] == "close"
    assert closed
    assert HEAD_TIMEOUT - EARLY <= seconds < HEAD_TIMEOUT + MARGIN


def _trickle(shim: Shim, start: bytes) -> tuple[list[Answer], float | None]:
    """Send ``start``, then a byte every fifth of the head timeout, for ten head timeouts at most,
    reading all along: what came, and when the server closed the connection (None: not yet)."""
    received, started = b"", time.monotonic()
    with socket.create_connection(("127.0.0.1", shim.port), timeout=READ_LIMIT) as sock:
        sock.sendall(start)
        while time.monotonic() - started < 10 * HEAD_TIMEOUT:
            sock.settimeout(HEAD_TIMEOUT / 5)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                with contextlib.suppress(OSError):  # closed: the next recv says so
                    sock.sendall(b"a")
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return _parse(received), time.monotonic() - started
            received += chunk
    return _parse(received), None


def test_bytes_trickling_in_do_not_extend_the_deadline(shim: Shim) -> None:
    answers, closed_after = _trickle(shim, b"GET /healthz HTTP/1.1\r\nX-Slow: ")
    assert [answer.status for answer in answers] == [408]
    assert closed_after is not None and closed_after < HEAD_TIMEOUT + MARGIN, "closed while the bytes trickled in"


def test_a_body_trickling_in_after_its_answer_is_cut_off(shim: Shim) -> None:
    """The probe answers without reading the body; the rest of it may not hold the connection."""
    answers, closed_after = _trickle(shim, b"GET /healthz HTTP/1.1\r\nHost: shim\r\nContent-Length: 100000\r\n\r\n")
    assert [answer.status for answer in answers] == [200]
    assert closed_after is not None and closed_after < HEAD_TIMEOUT + MARGIN, "closed while the bytes trickled in"


def test_keep_alive_then_half_a_head_gets_408(shim: Shim) -> None:
    answers, closed, seconds = _exchange(shim, PROBE, b"POST / HTTP/1.1\r\nHost:")
    assert [answer.status for answer in answers] == [200, 408]
    assert closed and HEAD_TIMEOUT - EARLY <= seconds < HEAD_TIMEOUT + MARGIN


def _idle_then(shim: Shim, idle: float, then: bytes) -> tuple[list[Answer], bool, float]:
    """One probe, ``idle`` seconds of silence, then ``then``: the answers, whether the server
    closed, and how long after ``then`` was sent."""
    with socket.create_connection(("127.0.0.1", shim.port), timeout=READ_LIMIT) as sock:
        sock.sendall(PROBE)
        time.sleep(idle)
        sent = time.monotonic()
        sock.sendall(then)
        received, closed = read_until_closed(sock)
    return _parse(received), closed, time.monotonic() - sent


def test_a_keep_alive_connection_outlives_the_head_deadline(shim: Shim) -> None:
    """Idle past the head deadline after an answer (the keep-alive timeout is longer): still open."""
    last = b"GET /healthz HTTP/1.1\r\nHost: shim\r\nConnection: close\r\n\r\n"
    answers, closed, _ = _idle_then(shim, 3 * HEAD_TIMEOUT, last)
    assert [answer.status for answer in answers] == [200, 200]
    assert closed


def test_half_a_head_after_a_long_idle_gets_its_own_deadline(shim: Shim) -> None:
    """Idle past the head deadline, then half a head: 408 one head deadline after its first byte."""
    answers, closed, seconds = _idle_then(shim, 3 * HEAD_TIMEOUT, b"POST / HTTP/1.1\r\nHost:")
    assert [answer.status for answer in answers] == [200, 408]
    assert answers[1].error()["type"] == "request_timeout"
    assert closed and HEAD_TIMEOUT - EARLY <= seconds < HEAD_TIMEOUT + MARGIN


def test_pipelined_requests_are_answered_in_order_before_the_refusal(shim: Shim) -> None:
    answers, closed, _ = _exchange(shim, PROBE + PROBE + _post(b"X-Evil: a\rb\r\n"))
    assert [answer.status for answer in answers] == [200, 200, 400]
    assert answers[2].error()["type"] == "bad_request"
    assert closed


def test_the_factory() -> None:
    with pytest.raises(ValueError, match="positive"):
        http_protocol(0)
    h11_class = http_protocol(2.5, implementation="h11")
    assert issubclass(h11_class, H11Protocol)
    assert h11_class.head_timeout_seconds == 2.5
    chosen = http_protocol()
    assert issubclass(chosen, H11Protocol) is not httptools_installed(), "as uvicorn's http='auto' chooses"
    assert chosen.head_timeout_seconds == 10
