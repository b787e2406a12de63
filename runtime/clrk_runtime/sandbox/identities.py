"""The identity relay: a warm-started agent's way to the egress gateway, under the right name.

An agent started before its request has proxy credentials in its environment before its
invocation exists, and a running process's environment cannot change. So a warm-started
sandbox gets credentials of its own (a random user and password, :meth:`IdentityRelay.enrol`),
pointing at this relay instead of the gateway; the relay reads the head of each connection's
first request, checks those credentials, and sends the request on with the credentials of
whoever the sandbox is *now*: its start-up identity until the sandbox is claimed, its
invocation's from then on (:meth:`IdentityRelay.bind`). The gateway sees exactly what it sees for
a sandbox started on request: a per-invocation token it verifies, whose invocation keys spans,
token accounting, budgets and revocation.

A connection keeps the identity it was opened with: a ``CONNECT`` tunnel carries TLS the relay
cannot read, so binding a sandbox closes every connection it opened before (a call made during
start-up is never counted to a later invocation; an idle keep-alive connection is simply
reopened by the client). A plain proxy request (``GET http://…``) is sent with
``Connection: close``, so that each request on its own connection gets the current identity.

Callers are told apart by their credentials, not by socket: one relay serves every sandbox of a
shim, on a Unix socket (bubblewrap sandboxes reach it through their bind-mounted socket) or a
loopback TCP port (plain sandboxes, whose Landlock domain allows connecting to that port only).
Unknown or wrong credentials get ``407`` at once; nothing of a refused connection reaches the
gateway. Standard library only; never blocks the loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Identity", "IdentityRelay"]

_log = logging.getLogger(__name__)

type Identity = Callable[[], tuple[str, str | None]]
"""Returns the proxy user name and token a new connection is sent on with (token None: no
credentials, the gateway then answers 407 as it would to the agent itself)."""

_HEAD_LIMIT = 64 * 1024
"""Bytes a request head may take before the relay gives up on it (431)."""
_HEAD_TIMEOUT = 10.0
"""Seconds to wait for a request head, from the connection opening."""
_CHUNK = 65536
_HOP_BY_HOP = (b"proxy-authorization", b"connection", b"proxy-connection", b"keep-alive")


@dataclass(eq=False)
class _Sandbox:
    password: str
    identity: Identity
    connections: set[asyncio.StreamWriter] = field(default_factory=set)


class IdentityRelay:
    """One per shim with warm start on (see the module docstring)."""

    def __init__(self, egress: str, *, socket_path: Path | None = None) -> None:
        """``egress`` is the gateway's ``host:port``; with ``socket_path`` the relay listens on
        that Unix socket (mode 0666: the sandboxes' uids connect), else on ``127.0.0.1`` port 0."""
        host, sep, port = egress.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"egress_proxy must be host:port, got {egress!r}")
        self._egress = (host.strip("[]"), int(port))
        self.socket_path = socket_path
        self._server: asyncio.Server | None = None
        self._sandboxes: dict[str, _Sandbox] = {}
        self._open: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` agents dial (TCP relay; known once started)."""
        if self._server is None or self.socket_path is not None:
            raise RuntimeError("not a started TCP relay")
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    async def start(self) -> None:
        if self.socket_path is not None:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.socket_path), limit=_HEAD_LIMIT)
            os.chmod(self.socket_path, 0o666)  # noqa: S103 - every sandbox uid connects; credentials decide
        else:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=_HEAD_LIMIT)

    async def stop(self) -> None:
        """Stop listening and close every connection (aborted: each one's task then ends)."""
        for user in list(self._sandboxes):
            self.forget(user)
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._open):
            writer.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)

    def enrol(self, identity: Identity) -> tuple[str, str]:
        """New credentials for one sandbox, sent on as ``identity()`` until :meth:`bind`; returns
        ``(user, password)`` for its proxy URL."""
        user = "sandbox-" + secrets.token_hex(8)
        password = secrets.token_urlsafe(24)
        self._sandboxes[user] = _Sandbox(password, identity)
        return user, password

    def bind(self, user: str, identity: Identity) -> None:
        """From now on ``user``'s connections go out as ``identity()``; those it opened before are
        closed (they carry the identity they were opened with)."""
        sandbox = self._sandboxes[user]
        sandbox.identity = identity
        self._close_all(sandbox)

    def forget(self, user: str) -> None:
        """The sandbox is gone: refuse its credentials, close its connections."""
        sandbox = self._sandboxes.pop(user, None)
        if sandbox is not None:
            self._close_all(sandbox)

    @staticmethod
    def _close_all(sandbox: _Sandbox) -> None:
        for writer in list(sandbox.connections):
            writer.transport.abort()
        sandbox.connections.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._open.add(writer)
        try:
            await self._relay(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            self._open.discard(writer)
            writer.transport.abort()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_HEAD_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            await _answer(writer, b"431 Request Header Fields Too Large", "request head over 64 KiB")
            return
        except (TimeoutError, asyncio.IncompleteReadError):
            return
        request_line, *lines = head[:-4].split(b"\r\n")
        method = request_line.split(b" ", 1)[0]
        given = [line.split(b":", 1)[1].strip() for line in lines if _name(line) == b"proxy-authorization"]
        found = self._sandboxes.get(_user(given[0].decode("latin-1"), self._sandboxes)) if len(given) == 1 else None
        if found is None:
            await _answer(writer, b"407 Proxy Authentication Required", "unknown proxy credentials")
            return
        # Counted as the sandbox's before anything else: a bind() from here on closes it, even
        # while the gateway is being reached (checked below, before its head goes out).
        found.connections.add(writer)
        user, token = found.identity()
        kept = [line for line in lines if _name(line) not in _HOP_BY_HOP]
        if token is not None:
            basic = base64.b64encode(f"{user}:{token}".encode()).decode("ascii")
            kept.append(f"Proxy-Authorization: Basic {basic}".encode())
        if method.upper() != b"CONNECT":
            kept.append(b"Connection: close")  # the next request comes on a new connection
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self._egress, limit=_CHUNK)
        except OSError as exc:
            found.connections.discard(writer)
            await _answer(writer, b"502 Bad Gateway", f"the egress gateway cannot be reached ({exc.strerror or exc})")
            return
        if writer.transport.is_closing():  # bound (or forgotten) meanwhile: not under this identity
            found.connections.discard(writer)
            upstream.transport.abort()
            return
        found.connections.add(upstream)
        try:
            upstream.write(b"\r\n".join([request_line, *kept]) + b"\r\n\r\n")
            await asyncio.gather(_pump(reader, upstream), _pump(upstream_reader, writer))
        finally:
            found.connections.discard(writer)
            found.connections.discard(upstream)
            upstream.transport.abort()


def _name(line: bytes) -> bytes:
    return line.split(b":", 1)[0].strip().lower()


def _user(value: str, known: dict[str, _Sandbox]) -> str:
    """The enrolled user ``Basic`` credentials name, when their password is that user's; else ""."""
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    sandbox = known.get(user)
    if not sep or sandbox is None or not hmac.compare_digest(password.encode(), sandbox.password.encode()):
        return ""
    return user


async def _pump(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
    """Copy until end of file, then half-close ``target`` (a tunnel's other way may go on)."""
    try:
        while data := await source.read(_CHUNK):
            target.write(data)
            await target.drain()
        if target.can_write_eof():
            target.write_eof()
    except OSError:
        target.transport.abort()


async def _answer(writer: asyncio.StreamWriter, status: bytes, reason: str) -> None:
    body = f"clrk identity relay: {reason}\n".encode()
    head = b"HTTP/1.1 " + status + b"\r\n"
    if status.startswith(b"407"):
        head += b'Proxy-Authenticate: Basic realm="clrk"\r\n'
    head += b"Connection: close\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body)
    writer.write(head + body)
    with contextlib.suppress(OSError):
        await writer.drain()
