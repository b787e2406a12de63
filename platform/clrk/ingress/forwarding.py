"""How the ingress reaches an agent's runtime shim: one interface, two transports.

``clrk dev`` hands the ingress each agent's shim as an ASGI app, reached in-process; in a cluster
the ingress calls the agent's Knative Service over HTTP. Both go through httpx, so the request
the shim sees is the same bytes either way.

Both sign what they forward when given the platform key: ``X-Clrk-Signature`` made with the
agent namespace's ``request`` key (:func:`clrk_runtime.protocol.keys.namespace_key`), over the
agent, the invocation id, the deadline and the body (:mod:`clrk_runtime.protocol.signing`). A
shim holding that key runs nothing else, so in a cluster only the clrk ingress can have an agent
run, and only with an invocation id it minted. Signing happens last, just before sending, so the
signature is as fresh as it can be.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from clrk_runtime.protocol.headers import INVOCATION_HEADER, SIGNATURE_HEADER, TIMEOUT_HEADER
from clrk_runtime.protocol.keys import namespace_key, namespace_of
from clrk_runtime.protocol.signing import sign_request

__all__ = ["AgentTarget", "Forwarder", "HttpForwarder", "InProcessForwarder", "Reply", "signed"]

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class AgentTarget:
    """One agent as the ingress routes to it."""

    ref: str
    timeout: float
    """The agent's spec.timeout in seconds: the end-to-end deadline."""


class Forwarder(Protocol):
    def targets(self) -> Mapping[str, AgentTarget]: ...

    def saturated(self, target: AgentTarget) -> bool:
        """Whether the agent would refuse one more invocation now (so the ingress can answer 503
        before reading the body); False when the forwarder cannot tell."""
        ...

    async def forward(self, target: AgentTarget, headers: Mapping[str, str], body: bytes, wait: float) -> Reply: ...

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


def _reply(response: httpx.Response) -> Reply:
    headers = {k: v for k, v in response.headers.items() if k.lower() not in _HOP_BY_HOP}
    return Reply(response.status_code, headers, response.content)


class InProcessForwarder:
    """Agents served by ASGI apps in this process (``clrk dev``). ``set_apps`` swaps the table
    on reload; requests already in flight keep the app they started with. ``platform_key``:
    sign each request (``clrk dev`` gives its own, made at every start)."""

    def __init__(self, saturated: Callable[[str], bool] | None = None, *, platform_key: bytes | None = None) -> None:
        self._saturated = saturated
        self._platform_key = platform_key
        self._apps: dict[str, tuple[AgentTarget, httpx.AsyncClient]] = {}
        self._targets: dict[str, AgentTarget] = {}
        self._retired: list[httpx.AsyncClient] = []

    def set_apps(self, apps: Mapping[str, tuple[AgentTarget, Any]]) -> None:
        self._retired += [client for _, client in self._apps.values()]
        self._apps = {
            ref: (target, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shim"))
            for ref, (target, app) in apps.items()
        }
        self._targets = {ref: target for ref, (target, _) in self._apps.items()}

    def targets(self) -> Mapping[str, AgentTarget]:
        return self._targets

    def saturated(self, target: AgentTarget) -> bool:
        return self._saturated is not None and self._saturated(target.ref)

    async def forward(self, target: AgentTarget, headers: Mapping[str, str], body: bytes, wait: float) -> Reply:
        _, client = self._apps[target.ref]
        sent = signed(headers, body, target.ref, self._platform_key)
        response = await client.post("/", headers=_wire(sent), content=body, timeout=wait)
        return _reply(response)

    async def aclose(self) -> None:
        clients = self._retired + [client for _, client in self._apps.values()]
        self._apps, self._targets, self._retired = {}, {}, []
        for client in clients:
            await client.aclose()


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

    async def aclose(self) -> None:
        await self._client.aclose()
