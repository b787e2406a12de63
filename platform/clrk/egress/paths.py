"""Model paths: a model host is sent only the routes clrk knows, in canonical form; 403 otherwise.

A budget counts ``POST /v1/messages``; the upstream routes more than that to a model
(``/v1/complete``, ``/v1/messages/batches``), and routes forms of that path a plain string test
does not see (``//v1/messages``, ``/v1/./messages``, ``/v1/%6Dessages``, servers that collapse
slashes, resolve dot segments or decode before routing). So on a *model host* (every host an
injection names, and ``api.anthropic.com``) an addon after the allow-list passes only:

* a path in canonical form: ASCII letters, digits and ``-_./`` only, no empty segment (``//``),
  no trailing slash, no ``.``/``..`` segment, no percent-encoding at all (``%6D`` or ``%2F``) —
  so that the gateway and the upstream cannot read one path two ways;
* one of :data:`ROUTES`: ``POST /v1/messages`` (the Claude CLI sends ``?beta=true``; the query
  is passed as it is), ``POST /v1/messages/count_tokens``, ``GET /v1/models`` and
  ``GET /v1/models/<id>``.

Anything else gets a 403 naming the path, before the body is read and before any upstream
connection. A model call with a ``Content-Encoding`` gets a 415: its budget reservation is
estimated from the body it carries, so the gateway must read what the upstream will.

The decision is the pure :func:`check_path`.
"""

from __future__ import annotations

import logging
import re

from mitmproxy import http

from clrk.api.egress import EgressConfig
from clrk.egress.denials import path_forbidden, unsupported_encoding
from clrk.egress.identity import CLAIMS

__all__ = ["DEFAULT_MODEL_HOSTS", "ROUTES", "ModelPaths", "check_path", "model_hosts"]

log = logging.getLogger(__name__)

DEFAULT_MODEL_HOSTS = ("api.anthropic.com",)
"""Model hosts whether or not a policy names them (an agent may carry a key of its own)."""

ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("POST", re.compile(r"/v1/messages")),
    ("POST", re.compile(r"/v1/messages/count_tokens")),
    ("GET", re.compile(r"/v1/models")),
    ("GET", re.compile(r"/v1/models/[A-Za-z0-9_-]+")),
)
"""``(method, path)`` a model host may be sent; the path must match whole."""

_ALLOWED_TEXT = ", ".join(f"{m} {p.pattern}" for m, p in ROUTES)
_CANONICAL_CHARS = re.compile(r"[A-Za-z0-9\-_./]*")


def _non_canonical(path: str) -> str | None:
    if not path.startswith("/"):
        return "the path is not absolute"
    if "%" in path:
        return "the path is percent-encoded"
    if not _CANONICAL_CHARS.fullmatch(path):
        return "the path has characters outside letters, digits and -_./"
    segments = path[1:].split("/")
    if "" in segments:
        return "the path has an empty segment"
    if "." in segments or ".." in segments:
        return "the path has a dot segment"
    return None


def check_path(method: str, target: str) -> str | None:
    """None when ``method target`` (the request-target as sent: path and query) may go to a model
    host, else why not."""
    path = target.partition("?")[0]
    reason = _non_canonical(path)
    if reason is not None:
        return f"{reason}; only canonical paths go to a model host"
    if not any(method == m and pattern.fullmatch(path) for m, pattern in ROUTES):
        return f"{method} {path} is not a model route clrk passes (only {_ALLOWED_TEXT})"
    return None


def model_hosts(config: EgressConfig) -> frozenset[str]:
    """Hosts whose paths are checked: every injection's host, and :data:`DEFAULT_MODEL_HOSTS`."""
    return frozenset(h.lower().rstrip(".") for h in (*DEFAULT_MODEL_HOSTS, *(i.host for i in config.injections)))


class ModelPaths:
    """Refuses, with a 403 naming the path, whatever a model host would route unaccounted."""

    def __init__(self, config: EgressConfig) -> None:
        self.config = config

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        request = flow.request
        host = request.host.lower().rstrip(".")
        if host not in model_hosts(self.config):
            return
        claims = flow.metadata.get(CLAIMS)
        agent = claims.agent if claims else ""
        invocation = claims.invocation_id if claims else ""
        reason = check_path(request.method, request.path)
        if reason is not None:
            log.warning(
                "egress 403: agent=%s invocation=%s %s %s%s: %s",
                agent,
                invocation,
                request.method,
                host,
                request.path,
                reason,
            )
            flow.response = path_forbidden(request.pretty_host, agent, request.path, reason, invocation)
            return
        encoding = request.headers.get("content-encoding", "").strip().lower()
        if encoding and encoding != "identity":
            log.warning("egress 415: agent=%s invocation=%s Content-Encoding %s", agent, invocation, encoding)
            flow.response = unsupported_encoding(request.pretty_host, encoding, invocation)
