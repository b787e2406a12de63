"""Async invocations: the request that asks for one, the paths that follow it, its status document.

``POST /`` with ``Prefer: respond-async`` (RFC 7240) answers at once::

    202 Accepted
    Location: /invocations/0193a4c2-…
    X-Clrk-Invocation-Id: 0193a4c2-…
    Preference-Applied: respond-async

    {"invocationId": "0193a4c2-…", "status": "queued", …}      (the status document)

Then, with the same Caller key (another caller's id is a 404, as is an unknown one):

==================================  ==============================================================
``GET /invocations/<id>``           the status document (:class:`Status` names its states)
``GET /invocations/<id>/result``    the body and ``Content-Type`` a synchronous call would have
                                    answered, with its status; 404 ``result_not_ready`` before
                                    the end, 410 ``result_expired`` once the result was dropped
``GET /invocations/<id>/events``    Server-Sent Events (:mod:`.streams`): ``status``, then each
                                    ``output`` line (from the first), then ``outcome``
``DELETE /invocations/<id>``        cancels: the sandbox's whole tree is killed; 409
                                    ``already_finished`` for a run that ended first
==================================  ==============================================================

When it ends, a signed CloudEvent goes to ``X-Clrk-Callback-Url`` (or the TaskAgent's
``spec.callback.url``): see :mod:`.callbacks`.

The status document (``GET /invocations/<id>``)::

    {"invocationId": "…", "agent": "ns/name", "status": "succeeded",
     "createdAt": "2026-…Z", "startedAt": "…", "finishedAt": "…", "expiresAt": "…",
     "httpStatus": 200, "exitCode": 0, "contentType": "application/json",
     "usage": {"inputTokens": 12, "outputTokens": 34, "modelCalls": 1},
     "error": null, "attempts": 1,
     "callback": {"url": "https://…", "state": "delivered", "attempts": 1,
                  "lastStatus": 204, "lastError": null, "deliveredAt": "…"}}
"""

from __future__ import annotations

import re
from enum import StrEnum

__all__ = [
    "ASYNC_PREFERENCE",
    "CALLBACK_HEADER",
    "FINAL",
    "INVOCATIONS_PATH",
    "MAX_ASYNC_TIMEOUT_S",
    "MAX_SYNC_TIMEOUT_S",
    "Status",
    "invocation_path",
    "outcome_status",
    "wants_async",
]

INVOCATIONS_PATH = "/invocations"
CALLBACK_HEADER = "X-Clrk-Callback-Url"
ASYNC_PREFERENCE = "respond-async"
MAX_SYNC_TIMEOUT_S = 600.0
"""The longest a synchronous call (buffered or streamed) may hold its request: Knative's default
``max-revision-timeout-seconds``, and longer than most proxies keep a request."""
MAX_ASYNC_TIMEOUT_S = 3600.0
"""The longest an async invocation may run (a TaskAgent's ``spec.timeout`` may go up to it; its
synchronous calls are still cut at :data:`MAX_SYNC_TIMEOUT_S`)."""


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


FINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT, Status.CANCELLED})

_PREFER_TOKEN = re.compile(r"^\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)")


def wants_async(prefer: str | None) -> bool:
    """Whether a ``Prefer`` header (RFC 7240: comma-separated preferences, each with optional
    ``;``-parameters, names case-insensitive) holds ``respond-async``."""
    if not prefer:
        return False
    for item in prefer.split(","):
        match = _PREFER_TOKEN.match(item)
        if match and match.group(1).lower() == ASYNC_PREFERENCE:
            return True
    return False


def invocation_path(invocation_id: str, *rest: str) -> str:
    """``/invocations/<id>`` (``rest``: ``"result"``, ``"events"``)."""
    return "/".join((INVOCATIONS_PATH, invocation_id, *rest))


def outcome_status(http_status: int, error_type: str | None = None) -> Status:
    """The final state a run's answer means: 2xx succeeded, ``deadline_exceeded`` timed out,
    anything else failed."""
    if 200 <= http_status < 300:
        return Status.SUCCEEDED
    if error_type == "deadline_exceeded" or http_status == 504:
        return Status.TIMED_OUT
    return Status.FAILED
