"""A request head over the documented 16 KiB cap at the real ingress (the protocol class ``clrk dev``
and ``clrk ingress`` serve with), sent as raw bytes in one write, the way a client sends a 64 KiB
header value: 431 with the JSON error body and the connection closed (it got 200), with h11 and
httptools; the ingress answers the next request as before.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from clrk_runtime.server.protocols import HEAD_CAP, httptools_installed
from tests.support.bad_input import BAD_INPUT_AGENT, BadInputIngress, bad_input_ingress_with
from tests.support.rawhttp import READ_LIMIT, read_until_closed

IMPLEMENTATIONS = [
    "h11",
    pytest.param("httptools", marks=pytest.mark.skipif(not httptools_installed(), reason="httptools not installed")),
]


@pytest.fixture(scope="module", params=IMPLEMENTATIONS)
def ingress(request: pytest.FixtureRequest) -> Iterator[BadInputIngress]:
    with bad_input_ingress_with(request.param) as running:
        yield running


def _send(ingress: BadInputIngress, data: bytes) -> tuple[int, dict[str, str], bytes, bool]:
    with socket.create_connection((ingress.host, ingress.port), timeout=READ_LIMIT) as sock:
        sock.sendall(data)
        received, closed = read_until_closed(sock)
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body, closed


def _request(extra: bytes) -> bytes:
    body = b'{"n": 1}'
    return (
        b"POST / HTTP/1.1\r\nHost: ingress\r\nContent-Type: application/json\r\n"
        + b"X-Clrk-TaskAgent: " + BAD_INPUT_AGENT.encode() + b"\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )  # fmt: skip


@pytest.mark.parametrize(
    "extra",
    [b"X-Big: " + b"a" * 65536 + b"\r\n", b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(200))],
    ids=["one-64KiB-value", "200-headers-of-100-bytes"],
)
def test_a_head_over_the_cap_in_one_write_gets_431(ingress: BadInputIngress, extra: bytes) -> None:
    status, headers, body, closed = _send(ingress, _request(extra))
    assert status == 431, body
    assert headers["content-type"] == "application/json" and headers["connection"] == "close" and closed
    error = json.loads(body)["error"]
    assert error["type"] == "request_head_too_large" and f"over {HEAD_CAP} bytes" in error["message"]
    assert len(body) < 1024, "the refusal names the fault without echoing it"
    healthy = httpx.post(
        ingress.url + "/", json={"still": "ok"}, headers={"X-Clrk-TaskAgent": BAD_INPUT_AGENT}, timeout=READ_LIMIT
    )
    assert healthy.status_code == 200 and healthy.json()["data"] == {"still": "ok"}


def test_a_head_under_the_cap_is_served(ingress: BadInputIngress) -> None:
    status, _, body, _ = _send(ingress, _request(b"X-Pad: " + b"p" * 12_000 + b"\r\nConnection: close\r\n"))
    assert status == 200, body
