"""The gateway's own answers: 407, 403 and 429, always at once and always with a JSON body.

Pure builders of :class:`mitmproxy.http.Response`. Denials are answered, never dropped: the
Claude CLI stalls for seconds on a dropped connection. No body ever carries a credential. 407 and
403 carry the platform's one error body (:mod:`clrk_runtime.protocol.errors`); 429 is shaped like
the provider's own ``rate_limit_error``, so that its clients back off the usual way.
"""

from __future__ import annotations

import json
import math
from typing import Any

from mitmproxy import http

from clrk_runtime.protocol.errors import error_document

__all__ = [
    "REALM",
    "budget_exceeded",
    "forbidden",
    "path_forbidden",
    "proxy_auth_required",
    "unresolvable",
    "unsupported_encoding",
]

REALM = "clrk-egress"
_SHORT_WAIT_S = 60


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> http.Response:
    return http.Response.make(
        status,
        json.dumps(body, separators=(",", ":")).encode(),
        {"content-type": "application/json", "connection": "close", **(headers or {})},
    )


def proxy_auth_required(reason: str) -> http.Response:
    """407: the request carried no valid proxy credentials for an invocation."""
    return _json(
        407,
        error_document("proxy_authentication_required", reason),
        {"proxy-authenticate": f'Basic realm="{REALM}"'},
    )


def forbidden(host: str, agent: str, reason: str, invocation_id: str = "") -> http.Response:
    """403 naming the host and the agent, for CONNECT and plain HTTP alike."""
    message = f"egress to {host} is not allowed for agent {agent or '?'}: {reason}"
    return _json(403, error_document("egress_denied", message, invocation_id, host=host, agent=agent))


def unresolvable(host: str, agent: str, reason: str, invocation_id: str = "") -> http.Response:
    """502: an allowed name the gateway cannot resolve (so cannot check where it leads)."""
    message = f"egress to {host} failed for agent {agent or '?'}: {reason}"
    return _json(502, error_document("egress_unresolvable", message, invocation_id, host=host, agent=agent))


def path_forbidden(host: str, agent: str, path: str, reason: str, invocation_id: str = "") -> http.Response:
    """403 naming the path a model host may not be sent (a route clrk does not account)."""
    message = f"egress to {host}{path} is not allowed for agent {agent or '?'}: {reason}"
    return _json(403, error_document("egress_denied", message, invocation_id, host=host, agent=agent, path=path))


def unsupported_encoding(host: str, encoding: str, invocation_id: str = "") -> http.Response:
    """415: a model call's body must be readable as sent, for its budget estimate."""
    message = (
        f"Content-Encoding {encoding!r} is not accepted on model calls to {host}: "
        "send the body unencoded (the gateway reads it to reserve the call's budget)"
    )
    return _json(415, error_document("unsupported_content_encoding", message, invocation_id, host=host))


def budget_exceeded(agent: str, retry_after_s: float) -> http.Response:
    """429 shaped like Anthropic's own rate_limit_error, so clients back off the usual way."""
    seconds = max(1, math.ceil(retry_after_s))
    headers = {"retry-after": str(seconds)}
    if seconds > _SHORT_WAIT_S:
        # Anthropic's SDKs honour this: fail now rather than back off for minutes.
        headers["x-should-retry"] = "false"
    return _json(
        429,
        {
            "type": "error",
            "error": {
                "type": "rate_limit_error",
                "message": f"clrk token budget of agent {agent} exhausted; retry in {seconds}s",
            },
        },
        headers,
    )
