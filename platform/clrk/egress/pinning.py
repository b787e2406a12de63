"""Pinning: a request goes only to the host its tunnel names, verified as that host.

Two addons. :class:`TunnelPinning`, after the allow-list, makes every name a request carries
agree: inside a tunnel, the TLS SNI the agent sent, the Host header and an absolute-form
request-target (``GET https://evil.example/… HTTP/1.1``, or HTTP/2's ``:authority``) must all
name the CONNECT target; a plain HTTP request's Host must name the host of its URL. A request
where they disagree gets a 403 naming what disagreed, before anything reaches an upstream. An
HTTP/1 absolute-form target then goes upstream in origin form (RFC 9112 §3.2.2: an origin server
takes the host from an absolute-form target over the Host header, so it must not see one).

:class:`UpstreamNames`, loaded before mitmproxy's ``tlsconfig``, sets the upstream connection's
SNI, and so the name its certificate is verified against, to the host being dialled (the CONNECT
target): never the SNI the agent chose. Without it mitmproxy reuses the agent's SNI, and an
agent sending SNI ``evil.test`` through a tunnel to ``api.anthropic.com`` would have the key
injected into a connection verified as ``evil.test``. With both, "inject only over verified TLS"
means verified as the policy's host.

The comparisons are the pure :func:`name_mismatch` and :func:`disagreement`.
"""

from __future__ import annotations

import weakref

from mitmproxy import connection, http, tls

from clrk.egress.allowlist import deny

__all__ = ["TunnelPinning", "UpstreamNames", "disagreement", "name_mismatch"]


def _host_of(name: str) -> str:
    return name.strip().lower().strip("[]").rstrip(".")


def name_mismatch(authority: str | None, target: tuple[str, int]) -> str | None:
    """None when ``authority`` (``host``, ``host:port``, ``[v6]:port``; empty or None: absent)
    names ``target``, else the host it names."""
    if not authority:
        return None
    text = authority.strip().lower()
    host, sep, port = text.rpartition(":")
    if (
        not sep
        or not port.isdigit()
        or (host.endswith(":") and not host.startswith("["))
        or (":" in host and not host.startswith("["))
    ):
        host, port = text, ""  # no port (a bare IPv6 address has colons of its own)
    host = _host_of(host)
    if host != target[0] or (port and int(port) != target[1]):
        return host or authority
    return None


def disagreement(target: tuple[str, int], *, sni: str | None, host_header: str | None, authority: str) -> str | None:
    """None when SNI, Host and request-target all name the CONNECT ``target``, else which did not."""
    if sni and _host_of(sni) != target[0]:
        return f"the TLS server name {_host_of(sni)} does not match the CONNECT target {target[0]}"
    if (named := name_mismatch(authority, target)) is not None:
        return f"the request-target names {named}, not the CONNECT target {target[0]}"
    if (named := name_mismatch(host_header, target)) is not None:
        return f"Host {named} does not match the CONNECT target {target[0]}"
    return None


class TunnelPinning:
    """Refuses, with a 403, a request whose SNI, Host or request-target names another host."""

    def __init__(self) -> None:
        self._targets: weakref.WeakKeyDictionary[connection.Client, tuple[str, int]] = weakref.WeakKeyDictionary()

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response is None:
            self._targets[flow.client_conn] = (_host_of(flow.request.host), flow.request.port)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        request = flow.request
        target = self._targets.get(flow.client_conn)
        if target is None:  # plain HTTP through the proxy: the URL's host is the target
            target = (_host_of(request.host), request.port)
            sni = None
            authority = ""
        else:
            sni = flow.client_conn.sni
            authority = request.authority
        reason = disagreement(target, sni=sni, host_header=request.host_header, authority=authority)
        if reason is not None:
            deny(flow, target[0], target[1], reason)
            return
        if authority and request.http_version.startswith("HTTP/1"):
            request.authority = ""  # origin form upstream; the Host header still names the target


class UpstreamNames:
    """Verifies every upstream connection as the host it was opened for; before ``tlsconfig``."""

    def tls_start_server(self, tls_start: tls.TlsData) -> None:
        server = tls_start.conn
        if isinstance(server, connection.Server) and server.address is not None:
            server.sni = str(server.address[0])
