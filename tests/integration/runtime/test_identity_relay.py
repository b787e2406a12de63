"""The identity relay sends a sandbox's egress on under whoever the sandbox is now, and nothing of
a caller it does not know: real sockets (TCP on port 0, a Unix socket) against a stand-in gateway
that records each request head it is sent (``tests/support/head_gateway.py``)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import stat
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from clrk_runtime.protocol.keys import namespace_key
from clrk_runtime.protocol.tokens import verify
from clrk_runtime.sandbox import identities
from clrk_runtime.sandbox.identities import Identity, IdentityRelay
from clrk_runtime.service.runtime import AgentRuntime
from clrk_runtime.settings import RuntimeSettings
from tests.support.head_gateway import HeadGateway, credentials, head_gateway, header_values
from tests.support.runtime import KINDS, settings_for

START_UP = ("01a247a9-0000-7000-8000-000000000001", "start-up-token")
INVOCATION = ("01a247a9-0000-7000-8000-000000000002", "invocation-token")
OTHER = ("01a247a9-0000-7000-8000-0000000000ff", "another-sandboxs-token")


def _as(user: str, token: str | None) -> Identity:
    def identity() -> tuple[str, str | None]:
        return user, token

    return identity


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _connect(authorization: str | None, target: str = "api.example:443", extra: bytes = b"") -> bytes:
    head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n".encode()
    if authorization is not None:
        head += f"Proxy-Authorization: {authorization}\r\n".encode()
    return head + extra + b"\r\n"


type Dial = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


@asynccontextmanager
async def _relay(gateway: HeadGateway, socket_path: Path | None = None) -> AsyncIterator[tuple[IdentityRelay, Dial]]:
    """A started relay to ``gateway`` and how to dial it (TCP, or ``socket_path``)."""
    relay = IdentityRelay(gateway.address, socket_path=socket_path)
    await relay.start()

    async def dial() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if socket_path is not None:
            return await asyncio.open_unix_connection(str(socket_path))
        return await asyncio.open_connection("127.0.0.1", relay.port)

    try:
        yield relay, dial
    finally:
        await relay.stop()


async def _status(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """The status line and the whole head of the answer."""
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], head


async def _rest(reader: asyncio.StreamReader) -> bytes:
    """What is left to read until the other end closes the connection (a reset ends it too)."""
    try:
        async with asyncio.timeout(10):
            return await reader.read()
    except ConnectionResetError:
        return b""


async def _closed(reader: asyncio.StreamReader) -> bool:
    """Whether the other end closed the connection with nothing more to say."""
    return await _rest(reader) == b""


async def _tunnel(dial: Dial, user: str, password: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An established CONNECT tunnel through the relay."""
    reader, writer = await dial()
    writer.write(_connect(_basic(user, password)))
    status, _ = await _status(reader)
    assert status == b"HTTP/1.1 200 Connection established", status
    return reader, writer


@pytest.mark.parametrize("over_unix_socket", [False, True], ids=["tcp", "unix"])
async def test_enrolled_credentials_go_on_as_the_identitys(over_unix_socket: bool, tmp_path: Path) -> None:
    socket_path = tmp_path / "relay.sock" if over_unix_socket else None
    async with head_gateway() as gateway, _relay(gateway, socket_path) as (relay, dial):
        if socket_path is not None:
            assert stat.S_IMODE(socket_path.stat().st_mode) == 0o666, "every sandbox uid connects"
        user, password = relay.enrol(_as(*START_UP))
        reader, writer = await _tunnel(dial, user, password)
        writer.write(b"GET /v1/models HTTP/1.1\r\nHost: api.example\r\n\r\n")  # inside the tunnel
        _, answer = await _status(reader)
        echoed = await reader.read()
        writer.close()
    assert b"Content-Length" in answer
    assert echoed == b"GET /v1/models HTTP/1.1\r\nHost: api.example\r\n\r\n", "the tunnel carries bytes both ways"
    [head] = gateway.heads
    assert head.startswith(b"CONNECT api.example:443 HTTP/1.1\r\n")
    assert header_values(head, "host") == ["api.example:443"]
    assert credentials(head) == [START_UP], "the identity's, once"
    assert user.encode() not in head and password.encode() not in head, "the sandbox's own never leave"
    if socket_path is not None:
        assert not socket_path.exists(), "stop removes the socket"


async def test_an_identity_without_a_token_goes_on_without_credentials() -> None:
    """As for an agent with no token key: the gateway answers 407 itself, as it would the agent."""
    async with head_gateway() as gateway, _relay(gateway) as (relay, dial):
        user, password = relay.enrol(_as(START_UP[0], None))
        _, writer = await _tunnel(dial, user, password)
        writer.close()
    [head] = gateway.heads
    assert header_values(head, "proxy-authorization") == []


def _refusals() -> list[tuple[str, Callable[[str, str], str | None]]]:
    return [
        ("missing", lambda user, password: None),
        ("unknown user", lambda user, password: _basic("sandbox-0000000000000000", password)),
        ("wrong password", lambda user, password: _basic(user, password + "x")),
        ("no password", lambda user, password: "Basic " + base64.b64encode(user.encode()).decode()),
        ("not basic", lambda user, password: f"Bearer {password}"),
        ("bad base64", lambda user, password: "Basic %%%"),
        ("not utf-8", lambda user, password: "Basic " + base64.b64encode(b"\xff\xfe:" + password.encode()).decode()),
    ]


@pytest.mark.parametrize(("case", "authorization"), _refusals(), ids=[case for case, _ in _refusals()])
async def test_unknown_credentials_get_407_and_nothing_reaches_the_gateway(
    case: str, authorization: Callable[[str, str], str | None]
) -> None:
    async with head_gateway() as gateway, _relay(gateway) as (relay, dial):
        user, password = relay.enrol(_as(*START_UP))
        reader, writer = await dial()
        writer.write(_connect(authorization(user, password)))
        status, head = await _status(reader)
        body = await _rest(reader)  # then the relay closes the connection
        writer.close()
        assert gateway.accepted == 0, f"{case}: a refused connection reached the gateway"
        _, good_writer = await _tunnel(dial, user, password)  # the same relay serves the right ones
        good_writer.close()
    assert status == b"HTTP/1.1 407 Proxy Authentication Required"
    assert header_values(head, "proxy-authenticate") == ['Basic realm="clrk"']
    assert body == b"clrk identity relay: unknown proxy credentials\n"
    assert password.encode() not in head + body
    assert gateway.accepted == 1 and credentials(gateway.heads[0]) == [START_UP]


async def test_credentials_given_twice_get_407() -> None:
    """Two Proxy-Authorization headers: which one the gateway would read is not the relay's guess."""
    async with head_gateway() as gateway, _relay(gateway) as (relay, dial):
        user, password = relay.enrol(_as(*START_UP))
        reader, writer = await dial()
        twice = f"Proxy-Authorization: {_basic(user, password)}\r\n".encode()
        writer.write(_connect(_basic(user, password), extra=twice))
        status, _ = await _status(reader)
        writer.close()
    assert status.startswith(b"HTTP/1.1 407 ")
    assert gateway.accepted == 0


async def test_bind_closes_the_connections_opened_before_and_new_ones_carry_the_new_identity() -> None:
    async with head_gateway() as gateway, _relay(gateway) as (relay, dial):
        user, password = relay.enrol(_as(*START_UP))
        other_user, other_password = relay.enrol(_as(*OTHER))
        before, before_writer = await _tunnel(dial, user, password)
        other, other_writer = await _tunnel(dial, other_user, other_password)
        relay.bind(user, _as(*INVOCATION))
        assert await _closed(before), "a start-up connection never carries the invocation's calls"
        _, after_writer = await _tunnel(dial, user, password)  # the sandbox's credentials stay its own
        other_writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await _status(other)
        other_echo = await other.read()
        for writer in (before_writer, after_writer, other_writer):
            writer.close()
    assert other_echo.startswith(b"GET / HTTP/1.1"), "another sandbox's tunnel is not touched"
    assert [credentials(head) for head in gateway.heads] == [[START_UP], [OTHER], [INVOCATION]]


async def test_forget_closes_the_connections_and_refuses_the_credentials() -> None:
    async with head_gateway() as gateway, _relay(gateway) as (relay, dial):
        user, password = relay.enrol(_as(*START_UP))
        reader, writer = await _tunnel(dial, user, password)
        relay.forget(user)
        assert await _closed(reader)
        again, again_writer = await dial()
        again_writer.write(_connect(_basic(user, password)))
        status, _ = await _status(again)
        for each in (writer, again_writer):
            each.close()
    assert status.startswith(b"HTTP/1.1 407 ")
    assert gateway.accepted == 1


async def test_a_plain_proxy_request_goes_on_with_connection_close() -> None:
    """So that each request comes on a new connection, under the identity of its moment."""
    async with head_gateway() as gateway, _relay(gateway) as (relay, dial):
        user, password = relay.enrol(_as(*START_UP))
        reader, writer = await dial()
        writer.write(
            b"GET http://api.example/v1 HTTP/1.1\r\nHost: api.example\r\n"
            + f"Proxy-Authorization: {_basic(user, password)}\r\n".encode()
            + b"Proxy-Connection: keep-alive\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
            + b"X-Kept: yes\r\n\r\n"
        )
        status, _ = await _status(reader)
        body = await reader.read()
        writer.close()
    assert (status, body) == (b"HTTP/1.1 200 OK", b"plain\n")
    [head] = gateway.heads
    assert head.startswith(b"GET http://api.example/v1 HTTP/1.1\r\n")
    assert header_values(head, "connection") == ["close"]
    assert header_values(head, "proxy-connection") == header_values(head, "keep-alive") == []
    assert header_values(head, "x-kept") == ["yes"]
    assert credentials(head) == [START_UP]


async def test_a_head_over_64_KiB_gets_431_and_nothing_reaches_the_gateway() -> None:
    async with head_gateway() as gateway, _relay(gateway) as (relay, dial):
        user, password = relay.enrol(_as(*START_UP))
        reader, writer = await dial()
        writer.write(_connect(_basic(user, password), extra=b"X-Big: " + b"a" * (65 * 1024) + b"\r\n"))
        status, _ = await _status(reader)
        writer.close()
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert gateway.accepted == 0


async def test_a_client_that_never_finishes_its_head_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identities, "_HEAD_TIMEOUT", 0.2)
    async with head_gateway() as gateway, _relay(gateway) as (relay, dial):
        user, password = relay.enrol(_as(*START_UP))
        reader, writer = await dial()
        writer.write(_connect(_basic(user, password))[:-2])  # all but the blank line
        assert await _closed(reader), "dropped once the head timeout passed"
        writer.close()
    assert gateway.accepted == 0


async def test_stop_closes_open_connections_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """A shim stopping with a tunnel open (an agent mid-call) closes it, and logs no error."""
    async with head_gateway() as gateway, _relay(gateway) as (relay, dial):
        user, password = relay.enrol(_as(*START_UP))
        reader, writer = await _tunnel(dial, user, password)
        await relay.stop()
        assert await _closed(reader)
        writer.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


PLATFORM_KEY = b"platform-key-of-these-tests"
TOKEN_KEY = namespace_key(PLATFORM_KEY, "proxy-token", "team")  # the key a shim of team/bot signs with
CALLER = r"""
# Calls through its proxy at start-up (or, started on request, first thing), then once its request came.
echo "calling at start-up" >&2
first=$(curl -sS -p -x "$HTTPS_PROXY" "http://first-${CLRK_METADATA_INVOCATION_ID:-ahead}.test/" 2>&1)
[ -n "${CLRK_READY_FD:-}" ] && echo ready >&"$CLRK_READY_FD"
cat >/dev/null
second=$(curl -sS -p -x "$HTTPS_PROXY" http://second.test/ 2>&1)
jq -cn --arg first "$first" --arg second "$second" '{$first, $second}'
"""


def _egress_settings(kind: str, root: Path, gateway: HeadGateway, *, warm_pool: int) -> RuntimeSettings:
    return settings_for(
        kind,
        root,
        ["sh", "-c", CALLER],
        warm_start=True,
        warm_pool=warm_pool,
        egress_proxy=gateway.address,
        egress_token_key=TOKEN_KEY.decode(),
    )


def _target(head: bytes) -> str:
    method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ")
    assert method == "CONNECT", head
    return target


@pytest.mark.parametrize("kind", KINDS)
async def test_a_warm_started_sandbox_calls_as_its_start_up_then_as_its_invocation(
    kind: str, shim_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clrk_runtime")
    async with head_gateway() as gateway:
        async with AgentRuntime(_egress_settings(kind, shim_root, gateway, warm_pool=1)) as runtime:
            assert [_target(head) for head in gateway.heads] == ["first-ahead.test:80"], "called during start-up"
            assert runtime._pool is not None
            [sandbox] = runtime._pool._warm
            assert sandbox.credentials is not None
            sandbox_password = sandbox.credentials[1]
            response = await runtime.handle({}, b"{}")
        now = time.time()
    assert response.status == 200, response.body
    invocation_id = response.header("X-Clrk-Invocation-Id")
    assert invocation_id is not None
    answer = json.loads(response.body)
    assert answer["first"].startswith("GET / HTTP/1.1\r\nHost: first-ahead.test"), "the tunnel answered"
    assert answer["second"].startswith("GET / HTTP/1.1\r\nHost: second.test"), answer
    start_up = gateway.heads[0]  # (the refill's agent may have called since)
    [request] = [head for head in gateway.heads if _target(head) == "second.test:80"]
    [(startup_id, startup_token)] = credentials(start_up)
    assert uuid.UUID(startup_id).version == 7 and startup_id != invocation_id
    assert verify(startup_token, TOKEN_KEY, now=now, invocation_id=startup_id).agent == "team/bot"
    assert any(f"[team/bot start-up {startup_id}] calling at start-up" in r.getMessage() for r in caplog.records)
    [(user, token)] = credentials(request)
    assert user == invocation_id
    claims = verify(token, TOKEN_KEY, now=now, invocation_id=invocation_id)
    assert claims.agent == "team/bot"
    assert not any(sandbox_password.encode() in head for head in gateway.heads), "the sandbox's own never leave"
    assert sandbox_password not in caplog.text


@pytest.mark.parametrize("kind", KINDS)
async def test_a_sandbox_started_on_request_calls_as_its_invocation_through_the_relay(
    kind: str, shim_root: Path
) -> None:
    """Warm start on, no warm sandbox: the agent starts on request and the relay sends its calls on
    under its invocation's id from the first."""
    async with head_gateway() as gateway:
        async with AgentRuntime(_egress_settings(kind, shim_root, gateway, warm_pool=0)) as runtime:
            response = await runtime.handle({}, b"{}")
        now = time.time()
    assert response.status == 200, response.body
    invocation_id = response.header("X-Clrk-Invocation-Id")
    assert [_target(head) for head in gateway.heads] == [f"first-{invocation_id}.test:80", "second.test:80"]
    for head in gateway.heads:
        [(user, token)] = credentials(head)
        assert user == invocation_id
        assert verify(token, TOKEN_KEY, now=now, invocation_id=invocation_id).agent == "team/bot"


async def test_bind_while_a_connection_reaches_the_gateway_closes_it_too(monkeypatch: pytest.MonkeyPatch) -> None:
    async with head_gateway() as gateway, _relay(gateway) as (relay, dial):
        user, password = relay.enrol(_as(*START_UP))
        connecting = asyncio.Event()
        go_on = asyncio.Event()
        open_connection = asyncio.open_connection

        async def slow_to_the_gateway(host: str, port: int, **kwargs: Any) -> Any:
            if port == gateway.port:
                connecting.set()
                await go_on.wait()
            return await open_connection(host, port, **kwargs)

        monkeypatch.setattr(asyncio, "open_connection", slow_to_the_gateway)  # as the relay dials it
        reader, writer = await dial()
        writer.write(_connect(_basic(user, password)))
        await asyncio.wait_for(connecting.wait(), 10)
        relay.bind(user, _as(*INVOCATION))  # the claim comes while the start-up's call is on its way
        go_on.set()
        try:
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            answer = b""  # closed, as bind closes the sandbox's connections
        writer.close()
    assert not answer.startswith(b"HTTP/1.1 200"), "a start-up connection never serves the invocation"
    assert [credentials(head) for head in gateway.heads] in ([], [[INVOCATION]])
