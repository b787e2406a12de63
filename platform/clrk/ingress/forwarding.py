"""How the ingress reaches an agent's runtime shim: one interface, two transports.

``clrk dev`` hands the ingress each agent's shim as an ASGI app, called in-process
(:mod:`clrk.ingress.inprocess`: httpx's ``ASGITransport`` would hold a streamed answer back until
its end); in a cluster the ingress calls the agent's Knative Service over HTTP with httpx. The
shim sees the same request either way. Each transport answers buffered (:meth:`Forwarder.forward`)
or as the answer comes (:meth:`Forwarder.stream`: the chunks as the shim sends them, and leaving
early closes the request, which the shim takes as its caller gone: it kills the agent's tree).

Both sign what they forward when given the platform key: ``X-Clrk-Signature`` made with the
agent namespace's ``request`` key (:func:`clrk_runtime.protocol.keys.namespace_key`), over the
agent, the invocation id, the deadline and the body (:mod:`clrk_runtime.protocol.signing`). A
shim holding that key runs nothing else, so in a cluster only the clrk ingress can have an agent
run, and only with an invocation id it minted. Signing happens last, just before sending, so the
signature is as fresh as it can be.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from clrk.ingress.inprocess import asgi_call
from clrk_runtime.protocol.headers import INVOCATION_HEADER, SIGNATURE_HEADER, TIMEOUT_HEADER
from clrk_runtime.protocol.keys import namespace_key, namespace_of
from clrk_runtime.protocol.signing import sign_request

__all__ = ["AgentTarget", "Forwarder", "HttpForwarder", "InProcessForwarder", "Reply", "Stream", "signed"]

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Stream:
    """A shim's answer as it arrives: status and headers at once, the body chunk by chunk (each as
    the shim sent it: nothing is held back)."""

    status: int
    headers: dict[str, str]
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True, slots=True)
class AgentTarget:
    """One agent as the ingress routes to it."""

    ref: str
    timeout: float
    """The agent's spec.timeout in seconds: the end-to-end deadline (a synchronous call is also
    cut at :data:`~clrk_runtime.protocol.invocations.MAX_SYNC_TIMEOUT_S`)."""
    callback_url: str | None = None
    """The agent's ``spec.callback.url``: where an async invocation's CloudEvent goes when its
    request named none."""


class Forwarder(Protocol):
    def targets(self) -> Mapping[str, AgentTarget]: ...

    def saturated(self, target: AgentTarget) -> bool:
        """Whether the agent would refuse one more invocation now (so the ingress can answer 503
        before reading the body); False when the forwarder cannot tell."""
        ...

    async def forward(self, target: AgentTarget, headers: Mapping[str, str], body: bytes, wait: float) -> Reply: ...

    def stream(
        self, target: AgentTarget, headers: Mapping[str, str], body: bytes, wait: float
    ) -> AbstractAsyncContextManager[Stream]:
        """Send the request; the context gives the answer as it arrives. ``wait`` bounds the wait
        for the head and for each chunk. Leaving the context early closes the request: the shim
        sees its caller gone and kills the agent's tree."""
        ...

    async def aclose(self) -> None: ...


def _wire(headers: Mapping[str, str]) -> dict[bytes, bytes]:
    """Header values as the caller's bytes: Starlette decoded them as latin-1, and httpx would
    encode a ``str`` as ASCII, failing (a 500) on any obs-text byte a caller may legally send."""
    return {name.encode("latin-1"): value.encode("latin-1") for name, value in headers.items()}


def signed(
    headers: Mapping[str, str], body: bytes, agent: str, platform_key: bytes | None, *, now: float | None = None
) -> dict[str, str]:
    """``headers`` with the ingress's ``X-Clrk-Signature`` for ``agent`` added (unchanged without
    a platform key). ``now`` is for tests."""
    out = {name: value for name, value in headers.items() if name.lower() != SIGNATURE_HEADER.lower()}
    if platform_key is None:
        return out
    lower = {name.lower(): value for name, value in out.items()}
    out[SIGNATURE_HEADER] = sign_request(
        namespace_key(platform_key, "request", namespace_of(agent)),
        now=time.time() if now is None else now,
        method="POST",
        agent=agent,
        invocation_id=lower.get(INVOCATION_HEADER.lower(), ""),
        timeout_ms=lower.get(TIMEOUT_HEADER.lower(), ""),
        content_type=lower.get("content-type", ""),
        body=body,
    )
    return out


def _kept(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The shim's answer headers a caller gets (hop-by-hop ones dropped, a repeated one joined)."""
    headers: dict[str, str] = {}
    for name, value in pairs:
        name = name.lower()
        if name not in _HOP_BY_HOP:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _reply(response: httpx.Response) -> Reply:
    return Reply(response.status_code, _kept(response.headers.multi_items()), response.content)


class InProcessForwarder:
    """Agents served by ASGI apps in this process (``clrk dev``), called through
    :func:`~clrk.ingress.inprocess.asgi_call` (the answer as it comes; the app hears its caller
    leave). ``set_apps`` swaps the table on reload; requests already in flight keep the app they
    started with. ``platform_key``: sign each request (``clrk dev`` gives its own, made at every
    start)."""

    def __init__(self, saturated: Callable[[str], bool] | None = None, *, platform_key: bytes | None = None) -> None:
        self._saturated = saturated
        self._platform_key = platform_key
        self._apps: dict[str, Any] = {}
        self._targets: dict[str, AgentTarget] = {}

    def set_apps(self, apps: Mapping[str, tuple[AgentTarget, Any]]) -> None:
        self._apps = {ref: app for ref, (_, app) in apps.items()}
        self._targets = {ref: target for ref, (target, _) in apps.items()}

    def targets(self) -> Mapping[str, AgentTarget]:
        return self._targets

    def saturated(self, target: AgentTarget) -> bool:
        return self._saturated is not None and self._saturated(target.ref)

    async def forward(self, target: AgentTarget, headers: Mapping[str, str], body: bytes, wait: float) -> Reply:
        async with self.stream(target, headers, body, wait) as answer:
            return Reply(answer.status, answer.headers, b"".join([chunk async for chunk in answer.chunks]))

    @asynccontextmanager
    async def stream(
        self, target: AgentTarget, headers: Mapping[str, str], body: bytes, wait: float
    ) -> AsyncIterator[Stream]:
        app = self._apps[target.ref]
        sent = signed(headers, body, target.ref, self._platform_key)
        async with asgi_call(app, "POST", "/", list(_wire(sent).items()), body, wait=wait) as answer:
            pairs = ((name.decode("latin-1"), value.decode("latin-1")) for name, value in answer.headers)
            yield Stream(answer.status, _kept(pairs), answer.chunks)

    async def aclose(self) -> None:
        self._apps, self._targets = {}, {}


class HttpForwarder:
    """Agents served by Knative Services: ``http://<name>.<namespace>.svc.<cluster_domain>/``
    (the cluster's DNS domain: ``cluster.local`` unless the cluster was set up otherwise).
    ``platform_key``: sign each request (:meth:`IngressSettings.platform_key
    <clrk.ingress.settings.IngressSettings.platform_key>`); without it requests go unsigned, and
    shims given a request key refuse them."""

    def __init__(
        self, targets: Mapping[str, AgentTarget], cluster_domain: str, platform_key: bytes | None = None
    ) -> None:
        self._platform_key = platform_key
        self._targets = dict(targets)
        self._domain = f"svc.{cluster_domain}"
        self._client = httpx.AsyncClient(limits=httpx.Limits(max_connections=1000))

    def targets(self) -> Mapping[str, AgentTarget]:
        return self._targets

    def saturated(self, target: AgentTarget) -> bool:
        return False  # Knative's queue-proxy answers for the pods' capacity

    def set_targets(self, targets: Mapping[str, AgentTarget]) -> None:
        """Swap the routing table (a cluster's TaskAgents, re-read every few seconds)."""
        self._targets = dict(targets)

    def url(self, target: AgentTarget) -> str:
        namespace, name = target.ref.split("/", 1)
        return f"http://{name}.{namespace}.{self._domain}/"

    async def forward(self, target: AgentTarget, headers: Mapping[str, str], body: bytes, wait: float) -> Reply:
        sent = signed(headers, body, target.ref, self._platform_key)
        response = await self._client.post(self.url(target), headers=_wire(sent), content=body, timeout=wait)
        return _reply(response)

    @asynccontextmanager
    async def stream(
        self, target: AgentTarget, headers: Mapping[str, str], body: bytes, wait: float
    ) -> AsyncIterator[Stream]:
        sent = signed(headers, body, target.ref, self._platform_key)
        request = self._client.build_request("POST", self.url(target), headers=_wire(sent), content=body, timeout=wait)
        response = await self._client.send(request, stream=True)
        try:  # each chunk as it comes off the socket; leaving closes the connection (the shim hears it)
            yield Stream(response.status_code, _kept(response.headers.multi_items()), response.aiter_raw())
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()
