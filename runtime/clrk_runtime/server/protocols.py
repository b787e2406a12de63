"""uvicorn's HTTP protocol with the platform's JSON refusals and a deadline for the request head.

uvicorn answers what HTTP cannot frame (a bare CR or NUL in a header, two Content-Lengths, a TLS
ClientHello, a head past h11's buffer) with ``400 text/plain`` before any app runs, and it has no
deadline for a request head: a connection that sends nothing, or half a head, stays open forever
(slowloris). The protocol classes here answer the first with::

    400 {"error": {"type": "bad_request", "message": "..."}}          Connection: close

and give every request head ``head_timeout_seconds`` from the moment the connection opens (or
the previous response on it finished): a head still incomplete then gets::

    408 {"error": {"type": "request_timeout", "message": "..."}}      Connection: close

and a new connection on which nothing arrived is closed without an answer. A keep-alive
connection idle since its last answer is closed by uvicorn's keep-alive timeout
(``timeout_keep_alive``: uvicorn's default is 5 s, the shim's 120 s, see
``RuntimeSettings.keep_alive_seconds``), however it compares with the head deadline: the deadline
passing on a connection with nothing sent since its answer leaves it open. uvicorn cancels the
keep-alive timeout at the first byte of the next head; the head deadline then bounds that head:
the one counted from the answer if it is still running, else one counted from that first byte.
The same deadline covers the rest of a body the app did not wait for (it answered first, e.g.
413): unfinished then, the connection is closed.
A request head (request line, headers, blank line) over :data:`HEAD_CAP` (16 KiB, h11's
``h11_max_incomplete_event_size``; the same for httptools) gets, however its bytes arrive (one
read or many, streamed or pipelined), before any app runs::

    431 {"error": {"type": "request_head_too_large", "message": "..."}}  Connection: close

(the message names the largest header when the head is whole). h11 checks only an *incomplete*
head against its buffer, and httptools buffers a head of any size: both would accept a long head
that arrives in one read, so the size of every whole head is counted here too (h11: the bytes
its parser took for the head; httptools: its request line and headers as the parser reports them,
trailing blanks included).

Every server of the platform uses it (``clrk dev``'s and the cluster's ingress, ``clrk-shim``)::

    uvicorn.Config(app, http=http_protocol(settings.head_timeout_seconds))

h11 serves unless httptools is installed, as with uvicorn's own ``http="auto"``.
"""

from __future__ import annotations

import asyncio
import functools
import http
import importlib.util
import logging
from typing import Any, ClassVar, Literal, cast

import h11
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from clrk_runtime.protocol.errors import error_body
from clrk_runtime.protocol.headers import INVOCATION_HEADER
from clrk_runtime.protocol.ids import new_invocation_id

__all__ = [
    "BAD_REQUEST_MESSAGE",
    "DEFAULT_HEAD_TIMEOUT_SECONDS",
    "HEAD_CAP",
    "Implementation",
    "JsonH11Protocol",
    "http_protocol",
    "httptools_installed",
]

DEFAULT_HEAD_TIMEOUT_SECONDS = 10.0
BAD_REQUEST_MESSAGE = (
    "the request cannot be read as HTTP/1.1 (a malformed or over-long request line or header, or bad "
    "body framing); the connection is closed"
)
_INVOCATION_HEADER = INVOCATION_HEADER.lower().encode("ascii")
HEAD_CAP = DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
"""Bytes a request head may have (16 KiB, unless ``uvicorn.Config(h11_max_incomplete_event_size=…)``
says otherwise); past it, 431 (nginx's default ``large_client_header_buffers`` allows 8 KiB a
line, Envoy's ``max_request_headers_kb`` 60 KiB in all)."""

Implementation = Literal["auto", "h11", "httptools"]


def httptools_installed() -> bool:
    """Whether uvicorn's ``http="auto"`` would pick httptools (it is importable)."""
    return importlib.util.find_spec("httptools") is not None


def _error_bytes(
    status: int,
    kind: str,
    message: str,
    default_headers: list[tuple[bytes, bytes]],
    invocation_id: str | None,
) -> bytes:
    """A whole ``Connection: close`` answer in the platform's JSON error shape."""
    headers = [*default_headers, (b"content-type", b"application/json")]
    if invocation_id is not None:
        headers.append((_INVOCATION_HEADER, invocation_id.encode("ascii")))
    body = error_body(kind, message, invocation_id)
    headers += [(b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    lines = [b"HTTP/1.1 %d %s" % (status, http.HTTPStatus(status).phrase.encode())]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class _JsonRefusals(asyncio.Protocol):
    """What both implementations share; mixed in before uvicorn's protocol class.

    The head deadline runs while the connection waits for a request head: from
    ``connection_made`` (or the end of the previous exchange) until a whole head has arrived.
    """

    head_timeout_seconds: ClassVar[float] = DEFAULT_HEAD_TIMEOUT_SECONDS
    invocation_ids: ClassVar[bool] = False
    """Give refusals an invocation-id header (and ``invocationId``), as the shim's answers have."""

    # Set by the uvicorn protocol class this is mixed into.
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    server_state: ServerState
    logger: logging.Logger
    timeout_keep_alive_task: asyncio.TimerHandle | None

    _head_deadline: float | None = None
    """Loop time by which the awaited head must be whole; None while no head is awaited."""
    _head_timer: asyncio.TimerHandle | None = None
    """Pending check of the deadline. Kept, not cancelled, when a head arrives: on a busy
    keep-alive connection a timer per request would cost more than the rare early wake-up."""
    _head_bytes = False
    """Bytes of the awaited head have arrived (a 408 is owed, not a silent close)."""
    _too_large: str | None = None
    """Set when the head being refused is over the cap: the refusal is a 431 saying this."""

    # -- what each implementation says about its parser -------------------------------------
    def _waiting_for_head(self) -> bool:
        """Every request so far is read and answered, and no new head is complete."""
        raise NotImplementedError

    def _draining(self) -> bool:
        """Every request so far is answered, but the body of the last is still arriving (the
        app answered without reading all of it, e.g. 413): the deadline covers the rest too."""
        raise NotImplementedError

    def _buffered_head(self) -> bool:
        """Part of the next head is already in the parser (sent while the last was answered)."""
        raise NotImplementedError

    def _may_answer(self) -> bool:
        """A 400 now would be the next answer on the connection and the only one to the request
        being read (an earlier request still being answered, or a response already begun, means
        the connection is only closed)."""
        raise NotImplementedError

    # -- the protocol hooks ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._sync_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._head_deadline is not None and data:
            self._head_bytes = True
        super().data_received(data)
        self._sync_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_deadline = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what its parser refused, in the platform's JSON error shape."""
        if self.transport.is_closing():
            return
        if self._may_answer():
            if self._too_large is not None:
                self._write_error(431, "request_head_too_large", self._too_large)
            else:
                self._write_error(400, "bad_request", BAD_REQUEST_MESSAGE)
        self._abandon_request()
        self.transport.close()

    def _head_cap(self) -> int:
        config = getattr(self, "config", None)
        return getattr(config, "h11_max_incomplete_event_size", None) or HEAD_CAP

    def _note_too_large(self, size: int | None, largest: tuple[bytes, int] | None = None) -> None:
        """Remember that the head being read is over the cap (the next refusal is a 431).

        ``size``: the whole head's bytes (None: it did not finish); ``largest``: the name and
        bytes of its largest line (an empty name: the request line, for its target).
        """
        cap = self._head_cap()
        what = f"{size} bytes" if size is not None else "not finished"
        message = f"the request head is over {cap} bytes ({what}"
        if largest is not None:
            name, lines = largest
            part = f"header {name[:64].decode('latin-1').lower()!r}" if name else "the request-target"
            message += f"; the largest: {part}, {lines} bytes"
        self._too_large = message + "); the connection is closed"
        self.logger.warning("request head over %d bytes: 431, connection closed", cap)

    def _abandon_request(self) -> None:
        """The request being read will get no other answer (subclasses tell its cycle)."""

    # -- the head deadline -------------------------------------------------------------------
    def _sync_head_timer(self) -> None:
        """Start the deadline when a head becomes awaited; drop it when none is."""
        if self.transport.is_closing() or not (self._waiting_for_head() or self._draining()):
            self._head_deadline = None
            self._head_bytes = False
        elif self._head_deadline is None:
            self._head_deadline = self.loop.time() + self.head_timeout_seconds
            self._head_bytes = self._buffered_head()
            if self._head_timer is None:
                self._head_timer = self.loop.call_at(self._head_deadline, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        deadline = self._head_deadline
        if deadline is None or self.transport.is_closing():
            return  # no head awaited now: the next wait arms a new check
        try:
            if deadline - self.loop.time() > 0.001:  # a later wait moved the deadline
                self._head_timer = self.loop.call_at(deadline, self._head_timed_out)
            elif self._draining():
                # Its answer went out; the rest of its body did not come: nothing more to say.
                self.logger.info(
                    "request body unfinished %gs after the answer: connection closed", self.head_timeout_seconds
                )
                self.transport.close()
            elif self._head_bytes or self._buffered_head():
                self.logger.info("request head incomplete after %gs: 408, connection closed", self.head_timeout_seconds)
                message = (
                    f"the request head did not arrive within {self.head_timeout_seconds:g}s; the connection is closed"
                )
                self._write_error(408, "request_timeout", message)
                self.transport.close()
            elif self.timeout_keep_alive_task is None:
                # A connection that never sent a byte: nothing to answer.
                self.transport.close()
            else:
                # Idle since its last answer: uvicorn's keep-alive timeout closes it. A head
                # begun later gets a deadline of its own (data_received starts it).
                self._head_deadline = None
        except Exception:
            self.logger.exception("could not refuse a request head that timed out")
            self.transport.abort()

    def _write_error(self, status: int, kind: str, message: str) -> None:
        invocation_id = new_invocation_id() if self.invocation_ids else None
        self.transport.write(_error_bytes(status, kind, message, self.server_state.default_headers, invocation_id))


class _HeadRefused(Exception):
    """Raised in a parser callback to stop httptools at a head over the cap."""


class _HeadTooLarge(h11.RemoteProtocolError):
    """A whole request head over the cap (h11 itself refuses only an incomplete one)."""


class _CappedConnection(h11.Connection):
    """h11's server connection, counting the bytes of each request head it parses."""

    def __init__(self, protocol: JsonH11Protocol, cap: int) -> None:
        super().__init__(h11.SERVER, cap)
        self._protocol = protocol
        self._cap = cap

    def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        waiting = self.their_state is h11.IDLE
        before = len(self._receive_buffer)
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            if waiting and exc.error_status_hint == 431:  # an incomplete head past the buffer
                self._protocol._note_too_large(None)
            raise
        if isinstance(event, h11.Request):
            size = before - len(self._receive_buffer)
            if size > self._cap:
                lines = [
                    (b"", len(event.target)),
                    *((name, len(name) + len(value) + 4) for name, value in event.headers),
                ]
                self._protocol._note_too_large(size, max(lines, key=lambda line: line[1]))
                raise _HeadTooLarge("request head too large", error_status_hint=431)
        return event


class JsonH11Protocol(_JsonRefusals, H11Protocol):
    """uvicorn's h11 protocol with JSON refusals, the head deadline and the head cap."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.conn = _CappedConnection(self, self._head_cap())
        super().connection_made(transport)

    def _waiting_for_head(self) -> bool:
        # IDLE: the last exchange is over (start_next_cycle ran) and no new Request event came.
        return self.conn.their_state is h11.IDLE

    def _draining(self) -> bool:
        return self.conn.our_state is h11.DONE and self.conn.their_state is h11.SEND_BODY

    def _buffered_head(self) -> bool:
        return bool(self.conn.trailing_data[0])

    def _may_answer(self) -> bool:
        # IDLE: a new head is being read; SEND_RESPONSE: a request came, the app has not answered.
        return self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE)

    def _abandon_request(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._sync_head_timer()


@functools.cache
def _httptools_protocol() -> type[_JsonRefusals]:
    """The httptools flavour, built on first use: uvicorn's module imports httptools."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class JsonHttpToolsProtocol(_JsonRefusals, HttpToolsProtocol):
        """uvicorn's httptools protocol with JSON refusals and the head deadline."""

        _in_head = False
        """The parser is inside a request head (``on_message_begin`` came, the head did not end)."""
        _in_body = False
        """A head came and its message has not ended."""
        _refuse_in_turn = False
        """A malformed head came behind requests not yet answered: a 400 is owed after them."""
        _heads_begun = 0
        _head_size = 0
        """Bytes received so far of the head being read (counted a whole chunk at a time)."""
        _target = 0
        _header_lines = 0
        """Bytes of the request-target, and of the header lines, of the head being read."""
        _largest: tuple[bytes, int] = (b"", 0)
        """Its largest header line so far: name and bytes (``name: value`` and CRLF)."""

        def data_received(self, data: bytes) -> None:
            # h11 refuses a head past its buffer (16 KiB unless configured); httptools buffers
            # any head whole, so cap it the same way here.
            idle, begun = not (self._in_head or self._in_body), self._heads_begun
            super().data_received(data)
            if not self._in_head or self.transport.is_closing():
                self._head_size = 0
                return
            if self._heads_begun == begun:
                self._head_size += len(data)
            else:  # the head began in this chunk: all of it, unless a message ended in it first
                self._head_size = len(data) if idle and self._heads_begun == begun + 1 else 0
            if self._head_size > self._head_cap():
                self._note_too_large(None)
                self.send_400_response("head too large")

        def _waiting_for_head(self) -> bool:
            # self.cycle is the latest request parsed (pipelined ones included).
            answered = self.cycle is None or self.cycle.response_complete
            return answered and not self._in_body

        def _draining(self) -> bool:
            return self._in_body and self.cycle is not None and self.cycle.response_complete

        def _buffered_head(self) -> bool:
            return self._in_head

        def _may_answer(self) -> bool:
            if self._in_body:
                # The body of the latest request is malformed: answer it if its app runs (nothing
                # queued before it) and has not begun a response.
                return self.cycle is not None and not self.pipeline and not self.cycle.response_started
            return True

        def send_400_response(self, msg: str) -> None:
            if not self._in_body and self.cycle is not None and not self.cycle.response_complete:
                # A malformed head pipelined behind requests not yet answered (httptools parses
                # a pipeline at once; h11 pauses at each request): refuse it in turn, after them.
                if not self._refuse_in_turn:
                    self._refuse_in_turn = True
                    self.flow.pause_reading()
                return
            super().send_400_response(msg)

        def _abandon_request(self) -> None:
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.disconnected = True
                self.cycle.message_event.set()

        def on_message_begin(self) -> None:
            self._in_head = True
            self._heads_begun += 1
            self._target = self._header_lines = 0
            self._largest = (b"", 0)
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._target += len(url)  # the target may come in pieces
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            size = len(name) + len(value) + 4
            self._header_lines += size
            if size > self._largest[1]:
                self._largest = (name, size)
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            # A whole head, however it arrived: the request line (method, target, version, CRLF),
            # its header lines, the blank line.
            size = len(self.parser.get_method()) + 13 + self._target + self._header_lines
            if size > self._head_cap():
                target = (b"", self._target)
                self._note_too_large(size, self._largest if self._largest[1] > self._target else target)
                raise _HeadRefused  # uvicorn answers a parser error with send_400_response
            self._in_body = True
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_body = False
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._refuse_in_turn and not self.pipeline and not self.transport.is_closing():
                self.send_400_response("a malformed pipelined head")
            self._sync_head_timer()

    return JsonHttpToolsProtocol


def http_protocol(
    head_timeout_seconds: float = DEFAULT_HEAD_TIMEOUT_SECONDS,
    *,
    invocation_ids: bool = False,
    implementation: Implementation = "auto",
) -> type[asyncio.Protocol]:
    """The class to pass as ``uvicorn.Config(http=...)``: JSON refusals, this head deadline.

    ``implementation="auto"`` picks httptools when it is installed, else h11 (as uvicorn does).
    ``invocation_ids`` gives each refusal a fresh invocation id, header and body (the shim's rule:
    every answer has one); the ingress gives ids to invocations only, as its other errors do.
    """
    if head_timeout_seconds <= 0:
        raise ValueError(f"head_timeout_seconds must be positive, not {head_timeout_seconds}")
    if implementation == "auto":
        implementation = "httptools" if httptools_installed() else "h11"
    base: type[_JsonRefusals] = JsonH11Protocol if implementation == "h11" else _httptools_protocol()
    attributes: dict[str, Any] = {
        "head_timeout_seconds": float(head_timeout_seconds),
        "invocation_ids": invocation_ids,
        "__module__": __name__,
    }
    return cast("type[asyncio.Protocol]", type(base.__name__, (base,), attributes))
