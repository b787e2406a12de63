"""The platform's own HTTP headers (names as sent; HTTP compares them case-insensitively), and
the one rule for reading a request's headers.

===========================  =====================================================================
``X-Clrk-TaskAgent``         caller → ingress: ``<namespace>/<name>`` of the agent to invoke
``X-Clrk-Invocation-Id``     every answer (ingress and shim, errors included) carries the
                             invocation's id; ingress → shim: the id the ingress minted (a shim
                             believes it only in a request the ingress signed)
``X-Clrk-Timeout-Ms``        caller → ingress: a shorter deadline; ingress → shim: what is left of it
``X-Clrk-Signature``         ingress → shim: the ingress's signature of the request (see
                             :mod:`clrk_runtime.protocol.signing`)
``X-Clrk-Exit-Code``         shim → ingress: the agent's exit status, on every answer of an
                             invocation whose agent exited by itself (``-N``: a signal N ended
                             it; absent when the deadline or the stdout cap cut the run)
===========================  =====================================================================

A header that decides what runs, or as whom, must be sent once: when two copies disagree, one
reader takes the first and another the last (the ingress once checked one ``ce-id`` while the
shim used the other). :func:`request_headers` is what the ingress and the shim both read a
request's headers with: a second ``Content-Type``, ``Authorization``, ``traceparent``, ``ce-*``
or ``X-Clrk-*`` is :class:`RepeatedHeader` (answered 400, naming it); any other header given
twice is joined with ``", "``, as RFC 9110 (section 5.3) reads a list-valued header.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "AGENT_HEADER",
    "EXIT_CODE_HEADER",
    "INVOCATION_HEADER",
    "SIGNATURE_HEADER",
    "TIMEOUT_HEADER",
    "RepeatedHeader",
    "decimal",
    "request_headers",
]

AGENT_HEADER = "X-Clrk-TaskAgent"
INVOCATION_HEADER = "X-Clrk-Invocation-Id"
TIMEOUT_HEADER = "X-Clrk-Timeout-Ms"
SIGNATURE_HEADER = "X-Clrk-Signature"
EXIT_CODE_HEADER = "X-Clrk-Exit-Code"

_SINGLE = frozenset({"content-type", "authorization", "traceparent"})
_SINGLE_PREFIXES = ("ce-", "x-clrk-")


class RepeatedHeader(ValueError):
    """A header that must be sent once came more than once; the message names it."""

    kind = "repeated_header"
    """The error body's ``type``."""

    def __init__(self, name: str, count: int) -> None:
        self.name = name
        self.message = f"header {name}: sent {count} times; send it once"
        super().__init__(self.message)


def _single(name: str) -> bool:
    return name in _SINGLE or name.startswith(_SINGLE_PREFIXES)


def request_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """A request's headers (ASGI's raw pairs) as one value per name, names lower-cased and values
    decoded as latin-1 (what HTTP/1.1 carries); raises :class:`RepeatedHeader`."""
    values: dict[str, list[str]] = {}
    for raw_name, raw_value in raw:
        values.setdefault(raw_name.decode("latin-1").lower(), []).append(raw_value.decode("latin-1"))
    for name, given in values.items():
        if len(given) > 1 and _single(name):
            raise RepeatedHeader(name, len(given))
    return {name: ", ".join(given) for name, given in values.items()}


def decimal(value: str, digits: int) -> int | None:
    """``value`` as a non-negative integer when it is 1 to
    ``digits`` ASCII digits, else None: the one rule for a number in a header
    (``X-Clrk-Timeout-Ms``, ``Content-Length``, a signature's time). ``"²".isdigit()`` is true and
    ``int()`` refuses it, and ``int()`` refuses more than 4300 digits: either would escape a
    caller's check as an error of another kind."""
    if 0 < len(value) <= digits and value.isascii() and value.isdigit():
        return int(value)
    return None
