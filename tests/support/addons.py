"""The fast tier for the egress addons: mitmproxy's own test helpers, no sockets.

``mitmproxy.test.taddons`` gives a master and ``mitmproxy.ctx`` (options included) for addons to
run in; ``mitmproxy.test.tflow`` builds flows. This module adds the flows an agent's traffic makes
(a CONNECT with proxy credentials, a request inside that tunnel, a Messages call and its JSON or
SSE response) and :func:`play`, which fires a hook the way mitmproxy does::

    async with addon_context(ProxyIdentity(TOKEN_KEY)) as tctx:
        flow = connect_flow("api.anthropic.com")                       # no credentials
        await play(tctx, "http_connect", flow)
        assert flow.response.status_code == 407

The real-TLS tier (``tests/integration/egress``) proves the same addons with real sockets.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import warnings
from collections.abc import AsyncIterator, Iterable
from typing import Any

from mitmproxy import connection, http
from mitmproxy.proxy import server_hooks
from mitmproxy.proxy.layers import http as http_layer

from clrk.egress.identity import CLAIMS
from clrk.egress.messages import parse_request
from clrk.egress.usage import CALL, ModelCall
from clrk_runtime.protocol.tokens import ProxyClaims, sign
from tests.support.egress import AGENT, TRACEPARENT, shim_key

with warnings.catch_warnings():
    # taddons imports mitmproxy.addons, whose ldap3 import warns (see clrk.egress._mitm).
    warnings.simplefilter("ignore", DeprecationWarning)
    from mitmproxy.test import taddons, tflow, tutils

__all__ = [
    "MESSAGES_HOST",
    "addon_context",
    "claims",
    "connect_flow",
    "identified",
    "json_response",
    "messages_flow",
    "play",
    "proxy_authorization",
    "request_flow",
    "sse_body",
    "streamed_response",
    "with_call",
]

MESSAGES_HOST = "api.anthropic.com"

_HOOKS: dict[str, Any] = {
    "http_connect": http_layer.HttpConnectHook,
    "requestheaders": http_layer.HttpRequestHeadersHook,
    "request": http_layer.HttpRequestHook,
    "responseheaders": http_layer.HttpResponseHeadersHook,
    "response": http_layer.HttpResponseHook,
    "error": http_layer.HttpErrorHook,
    "server_connect": server_hooks.ServerConnectHook,
    "server_connected": server_hooks.ServerConnectedHook,
    "server_connect_error": server_hooks.ServerConnectErrorHook,
}


@contextlib.asynccontextmanager
async def addon_context(*addons: object) -> AsyncIterator[Any]:
    """``taddons.context`` with ``addons`` loaded, leaving the root logger as it found it.

    mitmproxy's Master puts a handler on the root logger; the gateway takes it off again, and so
    does this (the suite turns stray log records into mitmproxy events otherwise).
    """
    with taddons.context(*addons) as tctx:
        try:
            yield tctx
        finally:
            tctx.master._legacy_log_events.uninstall()


async def play(tctx: Any, hook: str, data: object) -> None:
    """Fire ``hook`` (``"request"``, ``"server_connect"`` …) at every loaded addon, in order."""
    await tctx.master.addons.trigger_event(_HOOKS[hook](data))


def claims(invocation_id: str = "inv-1", agent: str = AGENT, ttl: float = 300.0) -> ProxyClaims:
    return ProxyClaims(invocation_id, agent, time.time() + ttl, TRACEPARENT)


def proxy_authorization(invocation_id: str = "inv-1", agent: str = AGENT, ttl: float = 300.0) -> str:
    """A ``Proxy-Authorization`` value as the shim's HTTPS_PROXY makes clients send it."""
    token = sign(claims(invocation_id, agent, ttl), shim_key(agent))
    return "Basic " + base64.b64encode(f"{invocation_id}:{token}".encode()).decode()


def _headers(pairs: Iterable[tuple[str, str]]) -> http.Headers:
    return http.Headers([(k.encode(), v.encode()) for k, v in pairs])


def connect_flow(
    host: str, port: int = 443, *, authorization: str | None = None, client: connection.Client | None = None
) -> http.HTTPFlow:
    """``CONNECT host:port`` from a fresh client (the agent opening a tunnel)."""
    headers = [("host", f"{host}:{port}")]
    if authorization is not None:
        headers.append(("proxy-authorization", authorization))
    request = tutils.treq(
        method=b"CONNECT",
        scheme=b"",
        host=host,
        port=port,
        authority=f"{host}:{port}".encode(),
        path=b"",
        headers=_headers(headers),
        content=b"",
    )
    return tflow.tflow(client_conn=client or tflow.tclient_conn(), req=request)


def request_flow(
    host: str,
    *,
    method: str = "GET",
    path: str = "/",
    port: int | None = None,
    scheme: str = "https",
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    client: connection.Client | None = None,
) -> http.HTTPFlow:
    """A request; pass the CONNECT flow's ``client_conn`` as ``client`` for one inside its tunnel."""
    port = port if port is not None else (443 if scheme == "https" else 80)
    all_headers = [("host", host), *headers]
    if body:
        all_headers.append(("content-length", str(len(body))))
    request = tutils.treq(
        method=method.encode(),
        scheme=scheme.encode(),
        host=host,
        port=port,
        authority=b"",
        path=path.encode(),
        headers=_headers(all_headers),
        content=body,
    )
    if client is None:
        client = tflow.tclient_conn()
        client.sni = host if scheme == "https" else None  # the name the agent's TLS client sent
    return tflow.tflow(client_conn=client, req=request)


def messages_flow(
    payload: dict[str, Any] | None = None, *, headers: Iterable[tuple[str, str]] = (), host: str = MESSAGES_HOST
) -> http.HTTPFlow:
    """``POST /v1/messages`` with a JSON body, as an agent's SDK sends it inside the tunnel."""
    body = json.dumps(payload or {"model": "claude-test", "max_tokens": 100, "messages": []}).encode()
    return request_flow(
        host,
        method="POST",
        path="/v1/messages?beta=true",
        headers=[("content-type", "application/json"), ("anthropic-version", "2023-06-01"), *headers],
        body=body,
    )


def identified(flow: http.HTTPFlow, invocation_id: str = "inv-1", agent: str = AGENT) -> http.HTTPFlow:
    """The flow as the identity addon leaves it for the addons after it."""
    flow.metadata[CLAIMS] = claims(invocation_id, agent)
    return flow


def with_call(flow: http.HTTPFlow, invocation_id: str = "inv-1", agent: str = AGENT) -> ModelCall:
    """Identify the flow and attach the :class:`ModelCall` the accounting addon would have made."""
    identified(flow, invocation_id, agent)
    call = ModelCall(invocation_id, agent, flow.request.pretty_host, parse_request(flow.request.content or b""), 0.0)
    flow.metadata[CALL] = call
    return call


def json_response(status: int, payload: dict[str, Any]) -> http.Response:
    """A whole response, body included (an upstream's JSON, or one of the gateway's own)."""
    return http.Response.make(status, json.dumps(payload).encode(), {"content-type": "application/json"})


def streamed_response(content_type: str, status: int = 200) -> http.Response:
    """Response headers only: the body is still to come (what ``responseheaders`` sees)."""
    return tutils.tresp(status_code=status, headers=_headers([("content-type", content_type)]), content=None)


def sse_body(*events: dict[str, Any]) -> bytes:
    """Server-sent events, one ``event:``/``data:`` pair per JSON event, CRLF-terminated."""
    return b"".join(f"event: {e['type']}\r\ndata: {json.dumps(e)}\r\n\r\n".encode() for e in events)
