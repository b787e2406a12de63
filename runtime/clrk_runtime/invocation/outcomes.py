"""How an agent's run becomes an HTTP answer: pure functions, no I/O.

==========================  ======  ===========================
what happened               status  body
==========================  ======  ===========================
exit 0                      200     stdout (type declared or sniffed)
exit non-zero               502     ``agent_failed`` error
deadline passed             504     ``deadline_exceeded`` error
stdout over its cap         502     ``response_too_large`` error
storage over its allowance  502     ``storage_exceeded`` error (killed by ``SIGXFSZ``)
no capacity                 503     ``no_capacity`` (+ ``Retry-After``)
body over the stdin cap     413     ``request_too_large`` error
the caller went away        499     ``caller_gone`` error (never delivered: nobody is left to
                                    read it; nginx's code for it, for logs and spans)
==========================  ======  ===========================

A ``Status`` or ``Content-Type`` the agent declares that HTTP cannot carry is left out, never
the answer: 204 or 304 with a non-empty stdout, a type with a control character or a byte past
ASCII (see :func:`declared_headers`).

Errors are the platform's one JSON body (:mod:`clrk_runtime.protocol.errors`); every answer
carries the invocation-id header (:data:`~clrk_runtime.protocol.headers.INVOCATION_HEADER`), and
every answer of a run whose agent exited by itself its exit status
(:data:`~clrk_runtime.protocol.headers.EXIT_CODE_HEADER`; not after the deadline or the stdout
cap, where the platform killed it).
"""

from __future__ import annotations

import json
import re
import signal
from dataclasses import dataclass, field

from clrk_runtime.protocol.errors import error_document
from clrk_runtime.protocol.headers import EXIT_CODE_HEADER, INVOCATION_HEADER

__all__ = [
    "CALLER_GONE",
    "OVER_CAP",
    "Declared",
    "Response",
    "RunResult",
    "agent_exit_code",
    "caller_gone",
    "declared_headers",
    "error_response",
    "map_outcome",
    "no_capacity",
    "parse_response_headers",
    "request_too_large",
    "sniff_content_type",
]

_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"
CALLER_GONE = 499
"""The status of an answer nobody is left to read (the caller disconnected first)."""
OVER_CAP = "response_too_large"
"""The error type of a run whose stdout passed its cap."""


@dataclass(frozen=True, slots=True)
class RunResult:
    """What the sandbox reported about one run."""

    exit_code: int | None
    """The entrypoint's exit status (negative: killed by that signal; None: never finished)."""
    stdout: bytes = b""
    timed_out: bool = False
    stdout_overflow: bool = False
    response_headers: str = ""
    """What the agent wrote into ``$CLRK_METADATA_RESPONSE_HEADERS``."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    error: dict[str, object] | None = None
    """The platform's error object (``{"type", "message", …}``) when ``body`` is one of its
    errors; None for the agent's own answer (whatever its status)."""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)


def error_response(
    status: int,
    kind: str,
    message: str,
    invocation_id: str,
    headers: list[tuple[str, str]] | None = None,
    **extra: object,
) -> Response:
    """A JSON error answer in the platform's one error shape (``extra`` adds fields to it)."""
    document = error_document(kind, message, invocation_id, **extra)
    error = document["error"]
    assert isinstance(error, dict)
    return Response(
        status,
        json.dumps(document).encode(),
        [("Content-Type", _JSON), (INVOCATION_HEADER, invocation_id), *(headers or [])],
        error,
    )


def no_capacity(invocation_id: str, retry_after: int = 1) -> Response:
    return error_response(
        503,
        "no_capacity",
        "every sandbox is busy and the queue is full; retry later",
        invocation_id,
        [("Retry-After", str(retry_after))],
    )


def request_too_large(invocation_id: str, cap: int) -> Response:
    return error_response(413, "request_too_large", f"the request body exceeds {cap} bytes", invocation_id)


def caller_gone(invocation_id: str) -> Response:
    return error_response(
        CALLER_GONE, "caller_gone", "the caller went away before the answer; the agent was killed", invocation_id
    )


def parse_response_headers(text: str) -> tuple[int | None, str | None]:
    """``(status, content_type)`` from CGI-style lines (``Status: 201``, ``Content-Type: …``).

    Unknown lines and malformed values are ignored: the agent's answer still goes out.
    """
    status, content_type, _ignored = _parse(text)
    return status, content_type


@dataclass(frozen=True, slots=True)
class Declared:
    """What an agent's response header lines ask for, once checked against its body."""

    status: int | None
    content_type: str | None
    ignored: tuple[str, ...] = ()
    """Why a declared line was set aside (for the log: the answer goes out without it)."""


def declared_headers(text: str, body: bytes) -> Declared:
    """:func:`parse_response_headers`, and a ``Status`` that forbids a body (204, 304) set aside
    when ``body`` is not empty: HTTP cannot send that answer, and the agent's output wins.

    A ``Content-Type`` that is not a valid header value (a control character, a byte past ASCII)
    is set aside too, and the body sniffed instead; each is named in :attr:`Declared.ignored`.
    """
    status, content_type, ignored = _parse(text)
    if status in _NO_BODY and body:
        ignored.append(f"Status: {status} ignored: it forbids a body and stdout holds {len(body)} bytes")
        status = None
    return Declared(status, content_type, tuple(ignored))


_NO_BODY = (204, 304)
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]+")
"""A header value the HTTP servers send as is: printable ASCII, spaces and tabs."""


def _parse(text: str) -> tuple[int | None, str | None, list[str]]:
    status: int | None = None
    content_type: str | None = None
    ignored: list[str] = []
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name, value = name.strip().lower(), value.strip()
        if name == "content-type" and value:
            if _HEADER_VALUE.fullmatch(value):
                content_type = value
            else:
                ignored.append(f"Content-Type {value[:80]!r} ignored: not a valid header value")
        elif name == "status":
            code = value.split(" ", 1)[0]
            if code.isdigit() and 200 <= int(code) <= 599:
                status = int(code)
    return status, content_type, ignored


def sniff_content_type(body: bytes) -> str:
    """``application/json`` when ``body`` parses as JSON, else UTF-8 text."""
    stripped = body.strip()
    if stripped[:1] in (b"{", b"[", b'"') or stripped[:1].isdigit() or stripped in _LITERALS:
        try:
            json.loads(stripped)
        except ValueError:
            return _TEXT
        return _JSON
    return _TEXT


_LITERALS = (b"true", b"false", b"null")


def agent_exit_code(result: RunResult) -> int | None:
    """The exit status the agent ended with by itself; None when the platform cut its run (the
    deadline, the stdout cap: the status then is only that of our kill)."""
    if result.timed_out or result.stdout_overflow:
        return None
    return result.exit_code


def map_outcome(result: RunResult, invocation_id: str, timeout: float) -> Response:
    """The answer for one finished run (see the table in this module's docstring), with
    :data:`~clrk_runtime.protocol.headers.EXIT_CODE_HEADER` when the agent exited by itself."""
    code = agent_exit_code(result)
    response = _answer(result, invocation_id, timeout)
    if code is None:
        return response
    return Response(response.status, response.body, [*response.headers, (EXIT_CODE_HEADER, str(code))], response.error)


def _answer(result: RunResult, invocation_id: str, timeout: float) -> Response:
    if result.timed_out:
        return error_response(
            504,
            "deadline_exceeded",
            f"the agent did not finish within its deadline ({timeout:g}s) and was killed",
            invocation_id,
        )
    if result.stdout_overflow:
        return error_response(502, OVER_CAP, "the agent's stdout exceeded its cap", invocation_id)
    if result.exit_code == -signal.SIGXFSZ:  # a file over RLIMIT_FSIZE, or a plain sandbox over its disk cap
        return error_response(
            502,
            "storage_exceeded",
            "the agent wrote more than its sandbox allows (a file over sandbox_file_size, or its "
            "directory over sandbox_disk) and was killed",
            invocation_id,
        )
    if result.exit_code != 0:
        return error_response(
            502,
            "agent_failed",
            f"the agent exited with code {result.exit_code}",
            invocation_id,
            exitCode=result.exit_code,
        )
    declared = declared_headers(result.response_headers, result.stdout)
    return Response(
        declared.status or 200,
        result.stdout,
        [
            ("Content-Type", declared.content_type or sniff_content_type(result.stdout)),
            (INVOCATION_HEADER, invocation_id),
        ],
    )
