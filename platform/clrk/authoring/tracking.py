"""Async invocations from the command line: ``clrk invoke --async`` and ``clrk invocations``.

``POST /`` with ``Prefer: respond-async`` answers ``202`` and the invocation's id at once; the
routes of :mod:`clrk_runtime.protocol.invocations` then give its status document, its result, its
events (followed with :mod:`.following`) and its cancellation, to the same Caller key only.

Pure: :func:`check_invocation_id`, :func:`invocations_url`, :func:`accepted_id`,
:func:`document_text` and :func:`status_line`. The I/O edge is :func:`request`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from clrk.authoring.invoking import InvocationResult, InvokeUsageError, exchange
from clrk_runtime.protocol.ids import is_invocation_id
from clrk_runtime.protocol.invocations import invocation_path

__all__ = [
    "ACCEPTED",
    "accepted_id",
    "check_invocation_id",
    "document_text",
    "invocations_url",
    "request",
    "status_line",
]

ACCEPTED = 202
"""The status of an async invocation's answer: it runs after the answer."""
_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def check_invocation_id(text: str) -> str:
    """``text`` when it is an invocation id (a UUIDv7, as ``clrk invoke --async`` prints it)."""
    if not is_invocation_id(text):
        raise InvokeUsageError("ID", f"{text!r}: expected an invocation id (a UUIDv7, as `clrk invoke --async` prints)")
    return text


def invocations_url(base: str, invocation_id: str, *rest: str) -> str:
    """``<base>/invocations/<id>[/<rest>]`` (``rest``: ``"result"``, ``"events"``)."""
    return base.rstrip("/") + invocation_path(invocation_id, *rest)


def accepted_id(result: InvocationResult) -> str | None:
    """The invocation id of a ``202`` answer (its header, else its status document); None for
    any other answer (an ingress that ran the call synchronously, or refused it)."""
    if result.status != ACCEPTED:
        return None
    if result.invocation_id:
        return result.invocation_id
    try:
        found = json.loads(result.body)["invocationId"]
    except (ValueError, KeyError, TypeError):
        return None
    return found if isinstance(found, str) and found else None


def document_text(body: bytes) -> str:
    """A JSON answer (a status document) indented for reading; other bytes as text."""
    try:
        return json.dumps(json.loads(body), indent=2)
    except ValueError:
        return body.decode("utf-8", "replace")


def status_line(document: Mapping[str, Any]) -> str:
    """One ``status`` event for ``--verbose``: ``status: running (attempt 1)``."""
    line = f"status: {document.get('status', 'unknown')}"
    details = []
    if isinstance(document.get("attempts"), int):
        details.append(f"attempt {document['attempts']}")
    if isinstance(document.get("httpStatus"), int):
        details.append(f"HTTP {document['httpStatus']}")
    return f"{line} ({', '.join(details)})" if details else line


def request(client: httpx.Client, method: str, url: str, headers: Mapping[str, str]) -> InvocationResult:
    """One request to an invocation's route; :class:`ClrkError` when nothing answers."""
    return exchange(client, method, url, headers, None, _TIMEOUT)
