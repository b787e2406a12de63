"""Allow-list: each agent reaches only the hosts its configuration lists; 403 for the rest.

An addon after :mod:`clrk.egress.identity`. It checks the CONNECT target (and so refuses before
any tunnel exists) and every plain HTTP request; inside a tunnel, a request's Host must be the
CONNECT target, so a tunnel to an allowed host cannot be reused for another. Loopback, private,
link-local and unspecified addresses (and ``localhost``) pass only when listed exactly.

The decision is the pure :func:`check_destination`.
"""

from __future__ import annotations

import ipaddress
import logging
import weakref

from mitmproxy import connection, http

from clrk.api.egress import EgressConfig
from clrk.egress.denials import forbidden
from clrk.egress.identity import CLAIMS

__all__ = ["AllowList", "check_destination", "host_header_matches", "is_internal_host"]

log = logging.getLogger(__name__)


def is_internal_host(host: str) -> bool:
    """True for loopback, private, link-local, unspecified or reserved addresses and localhost."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _matches(entry: str, host: str, port: int) -> tuple[bool, bool]:
    """(matches, exactly): an entry is ``host``, ``host:port`` or ``*.suffix``."""
    entry = entry.strip().lower()
    name, sep, entry_port = entry.rpartition(":")
    if sep and entry_port.isdigit() and not name.endswith(":"):
        if int(entry_port) != port:
            return False, False
        entry = name.strip("[]")
    if entry == host:
        return True, True
    if entry.startswith("*.") and host.endswith(entry[1:]):
        return True, False
    return False, False


def check_destination(host: str, port: int, allow: tuple[str, ...]) -> str | None:
    """None when ``host:port`` may be reached, else the reason it may not."""
    host = host.lower().rstrip(".").strip("[]")
    internal = is_internal_host(host)
    for entry in allow:
        matches, exactly = _matches(entry, host, port)
        if matches and (exactly or not internal):
            return None
    if internal:
        return "internal addresses must be listed explicitly"
    return "host not in the agent's allow-list"


def host_header_matches(host_header: str | None, target: tuple[str, int]) -> str | None:
    """None when a tunnelled request's Host names the CONNECT target, else the host it names."""
    if not host_header:
        return None
    host, sep, port = host_header.strip().lower().rpartition(":")
    if not sep or not port.isdigit() or (host.endswith(":") and not host.startswith("[")):
        host, port = host_header.strip().lower(), ""
    host = host.strip("[]").rstrip(".")
    if host != target[0] or (port and int(port) != target[1]):
        return host
    return None


class AllowList:
    """Refuses, with a 403 naming host and agent, every destination an agent may not reach."""

    def __init__(self, config: EgressConfig) -> None:
        self.config = config
        self._targets: weakref.WeakKeyDictionary[connection.Client, tuple[str, int]] = weakref.WeakKeyDictionary()

    def _deny(self, flow: http.HTTPFlow, host: str, port: int, reason: str) -> None:
        claims = flow.metadata.get(CLAIMS)
        agent = claims.agent if claims else ""
        invocation = claims.invocation_id if claims else ""
        log.warning(
            "egress 403: agent=%s invocation=%s %s %s:%s: %s",
            agent,
            invocation,
            flow.request.method,
            host,
            port,
            reason,
        )
        flow.response = forbidden(f"{host}:{port}", agent, reason, invocation)

    def _decide(self, flow: http.HTTPFlow, host: str, port: int) -> bool:
        claims = flow.metadata.get(CLAIMS)
        if claims is None:  # identity already answered, or did not run
            if flow.response is None:
                self._deny(flow, host, port, "no identity")
            return False
        agent = self.config.agents.get(claims.agent)
        if agent is None:
            self._deny(flow, host, port, "unknown agent")
            return False
        reason = check_destination(host, port, agent.allow)
        if reason is not None:
            self._deny(flow, host, port, reason)
            return False
        return True

    # -- mitmproxy hooks ------------------------------------------------------------------------

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        host, port = flow.request.host.lower(), flow.request.port
        if self._decide(flow, host, port):
            self._targets[flow.client_conn] = (host, port)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        host, port = flow.request.host.lower(), flow.request.port
        target = self._targets.get(flow.client_conn)
        if target is None:
            self._decide(flow, host, port)
            return
        claimed = host_header_matches(flow.request.host_header, target)
        if claimed is not None:
            self._deny(flow, claimed, port, f"Host does not match the CONNECT target {target[0]}")
            return
        self._decide(flow, host, port)  # the config may have changed since the CONNECT
