"""Malformed requests at a real ingress on a real socket, sent as raw bytes.

Each row of the table is one request (or one connection's worth of pipelined requests), the
answers it must get, in order, and whether the server must close the connection. After every row
the ingress must still answer a good request with 200: bad input never breaks it. The agent
behind the ingress is a real shim running ``cat`` (see ``tests/support/bad_input.py``).

Every rejection is the platform's JSON error (``{"error": {"type", "message"}}``). Requests that
HTTP itself can frame reach the ingress app. Requests that cannot be framed at all (bare CR or NUL
in a header, a header too big to buffer, malformed Content-Length or chunking) are refused by the
HTTP server's protocol class (``clrk_runtime.server.protocols``) before any app runs: 400
``bad_request``, connection closed. A request head that does not arrive whole within the head
timeout gets 408 ``request_timeout`` (or, when not one byte came, the connection is just closed).
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from clrk_runtime.server.protocols import httptools_installed
from tests.support.bad_input import (
    BAD_INPUT_AGENT,
    BAD_INPUT_BODY_TIMEOUT,
    BAD_INPUT_HEAD_TIMEOUT,
    BAD_INPUT_MAX_BODY,
    BadInputIngress,
    bad_input_ingress_with,
)
from tests.support.rawhttp import READ_LIMIT, read_until_closed

"""Longest wait for any answer: a row that needs longer has hung."""


@pytest.fixture(
    scope="module",
    params=[
        "h11",
        pytest.param("httptools", marks=pytest.mark.skipif(not httptools_installed(), reason="not installed")),
    ],
)
def bad_input_ingress(request: pytest.FixtureRequest) -> Iterator[BadInputIngress]:
    """The whole module against each HTTP implementation uvicorn may pick: h11 always, httptools
    where it is installed (uvicorn then prefers it). The two parse differently; the answers must not."""
    with bad_input_ingress_with(request.param) as ingress:
        yield ingress


def request(
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b'{"n": 1}',
    *,
    agent: str | None = BAD_INPUT_AGENT,
    method: str = "POST",
    path: str = "/",
    version: str = "HTTP/1.1",
    close: bool = True,
    length: int | None = None,
    raw_headers: bytes = b"",
) -> bytes:
    """One request's bytes. ``length`` overrides Content-Length; ``raw_headers`` go in verbatim."""
    lines = [f"{method} {path} {version}".encode()]
    if version == "HTTP/1.1":
        lines.append(b"Host: ingress")
    if agent is not None:
        lines.append(b"X-Clrk-TaskAgent: " + agent.encode("latin-1"))
    for name, value in headers or []:
        lines.append(f"{name}: {value}".encode("latin-1"))
    lines.append(f"Content-Length: {len(body) if length is None else length}".encode())
    if close:
        lines.append(b"Connection: close")
    head = b"\r\n".join(lines) + b"\r\n" + raw_headers + b"\r\n"
    return head + body


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error_type(self) -> str:
        assert self.headers.get("content-type") == "application/json", (self.headers, self.body)
        error = json.loads(self.body)["error"]
        assert isinstance(error["message"], str) and error["message"], error
        return str(error["type"])


@dataclass
class Exchange:
    answers: list[Answer]
    closed: bool
    seconds: float


def _parse(data: bytes) -> list[Answer]:
    answers = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"truncated answer: {data[:200]!r}"
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            size = int(headers["content-length"])
            body, data = rest[:size], rest[size:]
        elif headers.get("transfer-encoding") == "chunked":
            body, data = b"", rest
            while True:
                size_line, _, data = data.partition(b"\r\n")
                size = int(size_line, 16)
                body, data = body + data[:size], data[size + 2 :]
                if size == 0:
                    break
        else:
            body, data = rest, b""
        answers.append(Answer(int(status_line.split()[1]), headers, body))
    return answers


def _read_one_answer(sock: socket.socket) -> Answer:
    """One whole answer with a Content-Length (the connection stays open)."""
    received, deadline = b"", time.monotonic() + READ_LIMIT
    while True:
        head, sep, rest = received.partition(b"\r\n\r\n")
        if sep and len(rest) >= _content_length(head):
            (answer,) = _parse(received)
            return answer
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole answer came: {received!r}"
        received += chunk


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise AssertionError(f"no Content-Length: {head!r}")


def exchange(ingress: BadInputIngress, data: bytes, *, half_close: bool = False) -> Exchange:
    """Send ``data`` on a fresh connection; read until the server closes it (or READ_LIMIT)."""
    started = time.monotonic()
    with socket.create_connection((ingress.host, ingress.port), timeout=READ_LIMIT) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received, closed = read_until_closed(sock)
    return Exchange(_parse(received), closed, time.monotonic() - started)


def assert_healthy(ingress: BadInputIngress) -> None:
    """A good request on a fresh connection gets 200 with the caller's JSON as the event's data."""
    response = httpx.post(
        ingress.url + "/",
        json={"still": "ok"},
        headers={"X-Clrk-TaskAgent": BAD_INPUT_AGENT},
        timeout=READ_LIMIT,
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"still": "ok"}
    assert response.headers["x-clrk-invocation-id"]


@dataclass(frozen=True)
class Row:
    id: str
    data: bytes
    expect: list[tuple[int, str | None]]
    """(status, error type) for each answer in order; ``None``: a 2xx with no error."""
    closes: bool = True
    half_close: bool = False


def _ce(**attrs: object) -> bytes:
    event: dict[str, object] = {"specversion": "1.0", "id": "evt-1", "source": "/s", "type": "t", "data": {"x": 1}}
    event.update(attrs)
    return json.dumps({k: v for k, v in event.items() if v is not None}).encode()


STRUCTURED = [("Content-Type", "application/cloudevents+json")]
BINARY = [("ce-specversion", "1.0"), ("ce-id", "evt-1"), ("ce-source", "/s"), ("ce-type", "t")]
JSON = [("Content-Type", "application/json")]
GOOD = request(JSON, close=False)
LONG = "a" * 8192
UNFRAMED = (400, "bad_request")
"""What the HTTP server's protocol class answers to a request HTTP cannot frame."""

ROWS = [
    # -- the agent header ------------------------------------------------------------------
    Row("agent-missing", request(JSON, agent=None), [(400, "missing_agent")]),
    Row("agent-empty", request(JSON, agent=""), [(400, "invalid_agent")]),
    Row("agent-no-namespace", request(JSON, agent="cat"), [(400, "invalid_agent")]),
    Row("agent-upper-case", request(JSON, agent="Default/Cat"), [(400, "invalid_agent")]),
    Row("agent-three-parts", request(JSON, agent="default/cat/x"), [(400, "invalid_agent")]),
    Row("agent-empty-name", request(JSON, agent="default/"), [(400, "invalid_agent")]),
    Row("agent-path-traversal", request(JSON, agent="../cat"), [(400, "invalid_agent")]),
    Row("agent-non-ascii", request(JSON, agent="d\xe9fault/cat"), [(400, "invalid_agent")]),
    Row("agent-segment-64-chars", request(JSON, agent="default/" + "c" * 64), [(400, "invalid_agent")]),
    Row("agent-8KiB-value", request(JSON, agent=LONG), [(400, "invalid_agent")]),
    Row("agent-unknown", request(JSON, agent="default/nope"), [(404, "unknown_agent")]),
    # -- the deadline header ---------------------------------------------------------------
    Row("timeout-not-a-number", request([*JSON, ("X-Clrk-Timeout-Ms", "soon")]), [(400, "invalid_timeout")]),
    Row("timeout-zero", request([*JSON, ("X-Clrk-Timeout-Ms", "0")]), [(400, "invalid_timeout")]),
    Row("timeout-negative", request([*JSON, ("X-Clrk-Timeout-Ms", "-5")]), [(400, "invalid_timeout")]),
    # "²".isdigit() is true but int("²") fails: this was a 500 before the fix in ingress/app.py.
    Row("timeout-superscript-two", request([*JSON, ("X-Clrk-Timeout-Ms", "\xb2")]), [(400, "invalid_timeout")]),
    # int() refuses over 4300 digits: this too was a 500.
    Row("timeout-5000-digits", request([*JSON, ("X-Clrk-Timeout-Ms", "9" * 5000)]), [(400, "invalid_timeout")]),
    # -- JSON and content types ------------------------------------------------------------
    Row("json-invalid", request(JSON, b"{not json"), [(400, "invalid_json")]),
    Row("json-invalid-no-content-type", request(body=b"<xml/>"), [(400, "invalid_json")]),
    Row("json-empty-body-no-content-type", request(body=b""), [(400, "invalid_json")]),
    Row("json-not-utf8", request(JSON, b'"\xff\xfe"'), [(400, "invalid_json")]),
    Row("json-truncated", request(JSON, b'{"a": [1, 2'), [(400, "invalid_json")]),
    Row(
        "json-suffix-type-invalid",
        request([("Content-Type", "application/vnd.x+json")], b"nope"),
        [(400, "invalid_json")],
    ),
    Row(
        "json-content-type-params",
        request([("Content-Type", "Application/JSON; charset=latin-9")], b"{"),
        [(400, "invalid_json")],
    ),
    # -- sizes (the ingress here caps bodies at 4 KiB) -------------------------------------
    Row("size-declared-over-cap", request(JSON, b"1" * (BAD_INPUT_MAX_BODY + 1)), [(413, "payload_too_large")]),
    Row("size-declared-huge-no-body", request(JSON, b"", length=10**15), [(413, "payload_too_large")]),
    Row(
        "size-chunked-over-cap",
        request(JSON, b"1000\r\n" + b"1" * 4096 + b"\r\n10\r\n" + b"1" * 16 + b"\r\n0\r\n\r\n", length=None).replace(
            b"Content-Length: 4139", b"Transfer-Encoding: chunked"
        ),
        [(413, "payload_too_large")],
    ),
    # -- structured CloudEvents ------------------------------------------------------------
    Row("structured-not-json", request(STRUCTURED, b"{oops"), [(400, "invalid_json")]),
    Row("structured-array", request(STRUCTURED, b"[1, 2]"), [(400, "invalid_cloudevent")]),
    Row("structured-no-id", request(STRUCTURED, _ce(id=None)), [(400, "invalid_cloudevent")]),
    Row("structured-id-not-string", request(STRUCTURED, _ce(id=42)), [(400, "invalid_cloudevent")]),
    Row("structured-specversion-0.3", request(STRUCTURED, _ce(specversion="0.3")), [(400, "invalid_cloudevent")]),
    Row("structured-specversion-9", request(STRUCTURED, _ce(specversion="9.9")), [(400, "invalid_cloudevent")]),
    Row("structured-id-too-long", request(STRUCTURED, _ce(id="i" * 129)), [(400, "invalid_cloudevent")]),
    Row(
        "structured-id-response-splitting",
        request(STRUCTURED, _ce(id="evt\r\nSet-Cookie: pwned=1")),
        [(400, "invalid_cloudevent")],
    ),
    # -- binary CloudEvents ----------------------------------------------------------------
    Row("binary-no-id", request([*JSON, *BINARY[:1], *BINARY[2:]]), [(400, "invalid_cloudevent")]),
    Row("binary-empty-id", request([*JSON, *BINARY[:1], ("ce-id", ""), *BINARY[2:]]), [(400, "invalid_cloudevent")]),
    Row("binary-no-type", request([*JSON, *BINARY[:3]]), [(400, "invalid_cloudevent")]),
    Row(
        "binary-specversion-0.3",
        request([*JSON, ("ce-specversion", "0.3"), *BINARY[1:]]),
        [(400, "invalid_cloudevent")],
    ),
    Row(
        "binary-specversion-2", request([*JSON, ("ce-specversion", "2.0"), *BINARY[1:]]), [(400, "invalid_cloudevent")]
    ),
    Row(
        "binary-id-with-slash",
        request([*JSON, *BINARY[:1], ("ce-id", "../etc/passwd"), *BINARY[2:]]),
        [(400, "invalid_cloudevent")],
    ),
    Row("binary-id-8KiB", request([*JSON, *BINARY[:1], ("ce-id", LONG), *BINARY[2:]]), [(400, "invalid_cloudevent")]),
    # ce-* headers but a structured content type and a JSON array: the SDK raised AttributeError,
    # a 500 before the fix in ingress/events.py.
    Row("binary-headers-structured-array", request([*BINARY, *STRUCTURED], b"[]"), [(400, "invalid_cloudevent")]),
    # A ce-* header with an obs-text byte (legal HTTP): the forwarder encoded it as ASCII, a 500 before
    # the fix in ingress/forwarding.py; the caller's bytes now pass through to the shim.
    Row("binary-type-obs-text", request([*JSON, *BINARY[:3], ("ce-type", "t\xe9")], close=True), [(200, None)]),
    # -- methods and paths -----------------------------------------------------------------
    Row("method-get", request(method="GET", body=b""), [(405, "method_not_allowed")]),
    Row("method-delete", request(method="DELETE", body=b""), [(405, "method_not_allowed")]),
    Row("path-unknown", request(JSON, path="/invoke"), [(404, "not_found")]),
    # -- header injection and framing the HTTP parser refuses (server/protocols.py answers JSON) --
    Row("inject-bare-cr", request(JSON, raw_headers=b"X-Evil: a\rX-Clrk-TaskAgent: default/x\r\n"), [UNFRAMED]),
    Row("inject-nul", request(JSON, raw_headers=b"X-Evil: a\x00b\r\n"), [UNFRAMED]),
    Row("inject-space-in-name", request(JSON, raw_headers=b"X Clrk-TaskAgent: default/cat\r\n"), [UNFRAMED]),
    Row("framing-two-content-lengths", request(JSON, raw_headers=b"Content-Length: 99\r\n"), [UNFRAMED]),
    Row(
        "framing-content-length-abc",
        request(JSON, length=None).replace(b"Content-Length: 8", b"Content-Length: abc"),
        [UNFRAMED],
    ),
    Row("framing-transfer-encoding-gzip", request(JSON, raw_headers=b"Transfer-Encoding: gzip\r\n"), [UNFRAMED]),
    Row("framing-not-http", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, [UNFRAMED]),
    Row(
        "header-64KiB-value",
        b"POST / HTTP/1.1\r\nHost: ingress\r\nX-Clrk-TaskAgent: " + b"a" * 65536,
        [(431, "request_head_too_large")],
    ),
    # h11 stops at each pipelined request and httptools parses them all at once: either way the
    # malformed one is refused after the good ones before it are answered, in order.
    Row("pipelined-good-then-not-http", GOOD + b"\x16\x03\x01\x02\x00\x01", [(200, None), UNFRAMED]),
    Row(
        "pipelined-good-good-then-bare-cr",
        GOOD + GOOD + request(JSON, raw_headers=b"X-Evil: a\rb\r\n"),
        [(200, None), (200, None), UNFRAMED],
    ),
    # -- HTTP/1.0 --------------------------------------------------------------------------
    Row("http10-missing-agent", request(JSON, agent=None, version="HTTP/1.0", close=False), [(400, "missing_agent")]),
    Row("http10-over-cap", request(JSON, b"1" * 5000, version="HTTP/1.0", close=False), [(413, "payload_too_large")]),
    Row("http10-good", request(JSON, version="HTTP/1.0", close=False), [(200, None)]),
    # -- pipelining: answers come back in order, one bad request spoils none of the others ---
    Row(
        "pipelined-good-bad-good",
        GOOD + request(JSON, b"{bad", close=False) + request(JSON),
        [(200, None), (400, "invalid_json"), (200, None)],
    ),
    Row(
        "pipelined-bad-agents",
        request(JSON, agent=None, close=False) + request(JSON, agent="default/nope", close=False) + request(JSON),
        [(400, "missing_agent"), (404, "unknown_agent"), (200, None)],
    ),
    Row("pipelined-then-over-cap", GOOD + request(JSON, b"1" * 5000), [(200, None), (413, "payload_too_large")]),
]


def test_the_table_is_big_enough() -> None:
    assert sum(any(400 <= status < 500 for status, _ in row.expect) for row in ROWS) >= 30
    assert len({row.id for row in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_request_gets_the_right_4xx(bad_input_ingress: BadInputIngress, row: Row) -> None:
    result = exchange(bad_input_ingress, row.data, half_close=row.half_close)
    got = [(answer.status, None if answer.status < 400 else answer.error_type()) for answer in result.answers]
    assert got == row.expect
    assert result.closed == row.closes, "the connection must close after the last answer"
    for answer in result.answers:
        assert len(answer.body) < 1024, "an error names what is wrong without echoing all of it"
        assert b"pwned" not in answer.body and "set-cookie" not in answer.headers
        if answer.status < 400:
            assert answer.headers["x-clrk-invocation-id"]
        if answer.status == 400 and answer.error_type() == "bad_request":
            assert answer.headers["connection"] == "close"
    assert_healthy(bad_input_ingress)


def test_a_body_that_never_finishes_gets_408_within_the_body_timeout(bad_input_ingress: BadInputIngress) -> None:
    # Content-Length promises 100 bytes, 8 arrive, and the connection stays open.
    result = exchange(bad_input_ingress, request(JSON, b'{"n": 1}', length=100, close=False))
    assert [(a.status, a.error_type()) for a in result.answers] == [(408, "body_timeout")]
    assert result.closed, "the ingress closes the connection after a 408"
    assert BAD_INPUT_BODY_TIMEOUT <= result.seconds < BAD_INPUT_BODY_TIMEOUT + 3
    assert_healthy(bad_input_ingress)


def test_a_body_cut_short_by_the_client_frees_the_connection(bad_input_ingress: BadInputIngress) -> None:
    # Content-Length promises 100 bytes, 8 arrive, then the client stops sending (half-close).
    result = exchange(bad_input_ingress, request(JSON, b'{"n": 1}', length=100), half_close=True)
    assert result.closed and result.answers == [], "nothing to answer: the request never completed"
    assert result.seconds < 3
    assert_healthy(bad_input_ingress)


HEAD_MARGIN = 2.0
"""Slack past the head timeout for the refusal to arrive on a loaded 2-core machine."""
SLOW_HEADS = [
    ("nothing-sent", b"", []),
    ("half-a-request-line", b"POST / HT", [(408, "request_timeout")]),
    (
        "headers-but-no-blank-line",
        b"POST / HTTP/1.1\r\nHost: ingress\r\nX-Clrk-TaskAgent: default/cat\r\nContent-Length: 8\r\n",
        [(408, "request_timeout")],
    ),
]


@pytest.mark.parametrize(("data", "expect"), [row[1:] for row in SLOW_HEADS], ids=[row[0] for row in SLOW_HEADS])
def test_a_head_that_never_finishes_is_cut_off_at_the_head_timeout(
    bad_input_ingress: BadInputIngress, data: bytes, expect: list[tuple[int, str]]
) -> None:
    """Slowloris: a connection that sends nothing is closed, half a head gets 408, both at the
    head timeout (0.5 s here; the default is ``CLRK_INGRESS_HEAD_TIMEOUT_SECONDS=10``)."""
    result = exchange(bad_input_ingress, data)
    assert [(a.status, a.error_type()) for a in result.answers] == expect
    assert result.closed, "the server closes the connection at the head timeout"
    assert BAD_INPUT_HEAD_TIMEOUT <= result.seconds < BAD_INPUT_HEAD_TIMEOUT + HEAD_MARGIN
    for answer in result.answers:
        assert answer.headers["connection"] == "close"
    assert_healthy(bad_input_ingress)


def test_half_a_head_after_a_good_answer_on_a_keep_alive_connection_gets_408(
    bad_input_ingress: BadInputIngress,
) -> None:
    """The head deadline starts again when an answer finishes: uvicorn's keep-alive timeout stops
    at the first byte of the next head, so without it half a head would hold the connection."""
    with socket.create_connection((bad_input_ingress.host, bad_input_ingress.port), timeout=READ_LIMIT) as sock:
        started = time.monotonic()
        sock.sendall(GOOD)
        assert _read_one_answer(sock).status == 200
        half_sent = time.monotonic()
        sock.sendall(b"POST / HTTP/1.1\r\nHost: ingress\r\nX-Clrk-Task")
        received, closed = read_until_closed(sock)
        finished = time.monotonic()
    assert [(a.status, a.error_type()) for a in _parse(received)] == [(408, "request_timeout")]
    assert closed
    assert finished - started >= BAD_INPUT_HEAD_TIMEOUT, "not before the head timeout from the answer"
    assert finished - half_sent < BAD_INPUT_HEAD_TIMEOUT + HEAD_MARGIN
    assert_healthy(bad_input_ingress)


def test_a_body_trickling_in_after_an_early_413_is_cut_off(bad_input_ingress: BadInputIngress) -> None:
    """413 comes before the body is read; a byte of the rest every 0.1 s must not hold the connection
    (uvicorn's keep-alive timeout stops at the first byte): closed at the head timeout."""
    received, started, closed_after = b"", time.monotonic(), None
    with socket.create_connection((bad_input_ingress.host, bad_input_ingress.port), timeout=READ_LIMIT) as sock:
        sock.sendall(request(JSON, b"1" * 100, length=BAD_INPUT_MAX_BODY * 2, close=False))
        while closed_after is None and time.monotonic() - started < READ_LIMIT:
            sock.settimeout(0.1)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                with contextlib.suppress(OSError):  # closed: the next recv says so
                    sock.sendall(b"1")
                continue
            except ConnectionResetError:
                chunk = b""
            received += chunk
            if not chunk:
                closed_after = time.monotonic() - started
    assert [(a.status, a.error_type()) for a in _parse(received)] == [(413, "payload_too_large")]
    assert closed_after is not None and closed_after < BAD_INPUT_HEAD_TIMEOUT + HEAD_MARGIN
    assert_healthy(bad_input_ingress)


def test_an_idle_keep_alive_connection_outlives_the_head_timeout(bad_input_ingress: BadInputIngress) -> None:
    """Nothing sent after an answer: uvicorn's keep-alive timeout (5 s) decides, not the head timeout."""
    with socket.create_connection((bad_input_ingress.host, bad_input_ingress.port), timeout=READ_LIMIT) as sock:
        sock.sendall(GOOD)
        assert _read_one_answer(sock).status == 200
        received, closed = read_until_closed(sock, limit=BAD_INPUT_HEAD_TIMEOUT * 3)
        assert (received, closed) == (b"", False), "still open, silent, past the head timeout"
        sock.sendall(GOOD)
        assert _read_one_answer(sock).status == 200


def test_good_requests_after_the_whole_table(bad_input_ingress: BadInputIngress) -> None:
    """After all of the above, one keep-alive connection still serves good requests in a row."""
    with httpx.Client(base_url=bad_input_ingress.url, timeout=READ_LIMIT) as client:
        for n in range(5):
            response = client.post("/", json={"n": n}, headers={"X-Clrk-TaskAgent": BAD_INPUT_AGENT})
            assert response.status_code == 200 and response.json()["data"] == {"n": n}
        assert client.get("/healthz").json() == {"status": "ok", "agents": 2}
