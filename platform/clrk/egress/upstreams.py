"""The upstream seam: dial another address for a host while TLS is still verified against it.

``--egress-upstream api.anthropic.com:443=127.0.0.1:8443`` makes the gateway open its connection
for ``api.anthropic.com:443`` to ``127.0.0.1:8443``; the TLS SNI and certificate check still name
``api.anthropic.com``, so a wrong certificate fails as it would in production. An addon in the
shape of mitmproxy's ``mapremote``, acting on ``server_connect`` only: the address is restored
once connected, so mitmproxy still reuses the connection for that host.
"""

from __future__ import annotations

import logging
import weakref

from mitmproxy import connection
from mitmproxy.proxy import server_hooks

from clrk.egress.settings import Address, Upstreams

__all__ = ["UpstreamRedirect"]

log = logging.getLogger(__name__)


class UpstreamRedirect:
    def __init__(self, upstreams: Upstreams) -> None:
        self.upstreams = dict(upstreams)
        self._original: weakref.WeakKeyDictionary[connection.Server, Address] = weakref.WeakKeyDictionary()

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        server = data.server
        if server.address is None or server.error:
            return
        host, port = str(server.address[0]).lower(), int(server.address[1])
        dial = self.upstreams.get((host, port))
        if dial is None:
            return
        if server.sni is None:
            server.sni = host
        self._original[server] = (host, port)
        server.address = dial
        log.debug("egress upstream seam: %s:%s dialled at %s:%s", host, port, *dial)

    def _restore(self, data: server_hooks.ServerConnectionHookData) -> None:
        original = self._original.pop(data.server, None)
        if original is not None:
            # mitmproxy refuses address changes on open connections (to stop re-routing); this
            # only puts back the name the connection stands for, so reuse matches it again.
            object.__setattr__(data.server, "address", original)

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._restore(data)

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._restore(data)
