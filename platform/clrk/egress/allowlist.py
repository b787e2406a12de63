"""Allow-list: each agent reaches only the hosts its configuration lists; 403 for the rest.

An addon after :mod:`clrk.egress.identity`. It checks the CONNECT target (and so refuses before
any tunnel exists) and every plain HTTP request; inside a tunnel, a request's Host must be the
CONNECT target, so a tunnel to an allowed host cannot be reused for another. Loopback, private,
link-local and unspecified addresses (and ``localhost``) pass only when listed exactly.

A listed *name* is resolved here, not by mitmproxy: when any of its addresses is internal (a
policy host pointed at 127.0.0.1, a name in a private zone), it reaches only the port its entry
states (``name:port``), or 443 when the entry states none, never every port of that address; a
wildcard entry never reaches an internal address. The connection is then made to the address
checked (:meth:`AllowList.server_connect`), so a name that resolves elsewhere a moment later
(DNS rebinding) changes nothing. Hosts the upstream seam dials elsewhere are not resolved.

The decisions are the pure :func:`check_destination` and
:func:`~clrk.egress.addresses.check_addresses`.
"""

from __future__ import annotations

import ipaddress
import logging
import weakref
from collections.abc import Collection

from mitmproxy import connection, http
from mitmproxy.proxy import server_hooks

from clrk.api.egress import EgressConfig
from clrk.egress.addresses import Resolver, check_addresses, is_internal_host, resolve
from clrk.egress.denials import forbidden, unresolvable
from clrk.egress.identity import CLAIMS

__all__ = ["AllowList", "check_destination", "deny", "host_header_matches", "is_internal_host"]

log = logging.getLogger(__name__)


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


def deny(flow: http.HTTPFlow, host: str, port: int, reason: str) -> None:
    """Answer ``flow`` with a 403 naming ``host:port``, the agent and ``reason``, and log it."""
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


class AllowList:
    """Refuses, with a 403 naming host and agent, every destination an agent may not reach."""

    def __init__(
        self, config: EgressConfig, *, resolver: Resolver = resolve, dialled: Collection[tuple[str, int]] = ()
    ) -> None:
        """``dialled``: ``(host, port)`` the upstream seam connects elsewhere (not resolved)."""
        self.config = config
        self._resolve = resolver
        self._dialled = frozenset(dialled)
        self._targets: weakref.WeakKeyDictionary[connection.Client, tuple[str, int]] = weakref.WeakKeyDictionary()
        self._resolved: weakref.WeakKeyDictionary[connection.Client, dict[tuple[str, int], list[str]]] = (
            weakref.WeakKeyDictionary()
        )
        """Per client: the addresses each destination resolved to, once (a tunnel's later requests
        are checked against them again, not resolved again); the first is the one dialled."""
        self._dialling: weakref.WeakKeyDictionary[connection.Server, tuple[str, int]] = weakref.WeakKeyDictionary()

    async def _decide(self, flow: http.HTTPFlow, host: str, port: int) -> bool:
        claims = flow.metadata.get(CLAIMS)
        if claims is None:  # identity already answered, or did not run
            if flow.response is None:
                deny(flow, host, port, "no identity")
            return False
        agent = self.config.agents.get(claims.agent)
        if agent is None:
            deny(flow, host, port, "unknown agent")
            return False
        reason = check_destination(host, port, agent.allow)
        if reason is not None:
            deny(flow, host, port, reason)
            return False
        return await self._check_addresses(flow, host, port, agent.allow)

    async def _check_addresses(self, flow: http.HTTPFlow, host: str, port: int, allow: tuple[str, ...]) -> bool:
        name = host.strip("[]")
        if (host, port) in self._dialled or is_internal_host(name):
            return True  # dialled where the operator said, or an address listed as such
        try:
            ipaddress.ip_address(name)
        except ValueError:
            pass
        else:
            return True  # a global address literal: nothing to resolve
        known = self._resolved.setdefault(flow.client_conn, {})
        addresses = known.get((host, port), [])
        if not addresses:
            try:
                addresses = await self._resolve(name, port)
            except OSError as exc:
                addresses, error = [], str(exc.strerror or exc)
            else:
                error = "no address"
            if not addresses:
                claims = flow.metadata.get(CLAIMS)
                agent, invocation = (claims.agent, claims.invocation_id) if claims else ("", "")
                log.warning("egress 502: agent=%s invocation=%s cannot resolve %s: %s", agent, invocation, name, error)
                flow.response = unresolvable(f"{host}:{port}", agent, f"cannot resolve {name}: {error}", invocation)
                return False
        reason = check_addresses(name, port, allow, addresses)
        if reason is not None:
            deny(flow, host, port, reason)
            return False
        known[(host, port)] = addresses
        return True

    # -- mitmproxy hooks ------------------------------------------------------------------------

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        host, port = flow.request.host.lower(), flow.request.port
        if await self._decide(flow, host, port):
            self._targets[flow.client_conn] = (host, port)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        host, port = flow.request.host.lower(), flow.request.port
        target = self._targets.get(flow.client_conn)
        if target is None:
            await self._decide(flow, host, port)
            return
        claimed = host_header_matches(flow.request.host_header, target)
        if claimed is not None:
            deny(flow, claimed, port, f"Host does not match the CONNECT target {target[0]}")
            return
        await self._decide(flow, host, port)  # the config may have changed since the CONNECT

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """Dial the address that was checked, not whatever the name resolves to now."""
        server = data.server
        if server.address is None or server.error:
            return
        destination = (str(server.address[0]).lower(), int(server.address[1]))
        addresses = self._resolved.get(data.client, {}).get(destination)
        if not addresses:
            return
        self._dialling[server] = destination
        server.address = (addresses[0], destination[1])

    def _restore(self, data: server_hooks.ServerConnectionHookData) -> None:
        destination = self._dialling.pop(data.server, None)
        if destination is not None:
            # As the upstream seam does: put back the name the connection stands for, so that
            # mitmproxy reuses it for that name and verifies its certificate as that name.
            object.__setattr__(data.server, "address", destination)

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._restore(data)

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._restore(data)
