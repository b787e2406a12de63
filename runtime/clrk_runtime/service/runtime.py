"""``AgentRuntime``: one TaskAgent's shim, composable in-process (``clrk dev``) or served over HTTP.

    runtime = AgentRuntime(RuntimeSettings(command=["./agent.sh"], warm_pool=2))
    await runtime.start()
    response = await runtime.handle({"content-type": "application/json"}, b'{"q": 1}')
    await runtime.stop()          # drains: in-flight invocations finish first

The core is pure (:mod:`~clrk_runtime.protocol.envelope`, :mod:`~clrk_runtime.invocation.environment`,
:mod:`~clrk_runtime.invocation.outcomes`); this class wires them to the pool and the sandboxes, and keeps
one span per invocation (OpenTelemetry API only).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from opentelemetry import trace
from opentelemetry.trace import TracerProvider

from clrk_runtime.invocation.outcomes import Response, error_response, no_capacity, request_too_large
from clrk_runtime.launching.spawner import Spawner
from clrk_runtime.protocol.envelope import EnvelopeError, build_envelope
from clrk_runtime.protocol.headers import INVOCATION_HEADER, TIMEOUT_HEADER
from clrk_runtime.protocol.ids import given_or_new
from clrk_runtime.sandbox.backends import choose_backend
from clrk_runtime.sandbox.places import owners, running_uids, shared_places
from clrk_runtime.sandbox.relay import EgressRelay
from clrk_runtime.sandbox.sandboxes import SandboxKind, SandboxSpec
from clrk_runtime.sandbox.uids import HostIds
from clrk_runtime.service.handling import serve_invocation
from clrk_runtime.service.pool import NoCapacity, PoolStats, SandboxPool
from clrk_runtime.settings import RuntimeSettings

__all__ = ["EVENT_SOURCE", "AgentRuntime", "RuntimeStats"]

EVENT_SOURCE = "/clrk/shim"
"""``source`` of the envelope the shim makes for a request that is not a CloudEvent (a direct
call; what comes through the ingress already is one)."""
_INVOCATION = INVOCATION_HEADER.lower()
_log = logging.getLogger(__name__)
_TIMEOUT = TIMEOUT_HEADER.lower()


@dataclass(frozen=True, slots=True)
class RuntimeStats:
    """A live snapshot, e.g. for a TUI (see :attr:`AgentRuntime.stats`)."""

    pool: PoolStats
    in_flight: int
    ready: bool
    draining: bool


class AgentRuntime:
    def __init__(self, settings: RuntimeSettings, *, tracer_provider: TracerProvider | None = None) -> None:
        """``tracer_provider``: where invocation spans go (default: the global provider)."""
        if not settings.command:
            raise ValueError("no entrypoint: give the agent's command after `--`")
        self.settings = settings
        self._tracer = trace.get_tracer("clrk_runtime", tracer_provider=tracer_provider)
        self._pool: SandboxPool | None = None
        self._relay: EgressRelay | None = None
        self._spawner: Spawner | None = None
        self._ids: HostIds | None = None
        self._root: Path | None = None
        self._token_key: bytes | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._ready = False
        self._draining = False

    @property
    def kind(self) -> SandboxKind:
        """The sandbox kind in use (known once started)."""
        return self._started_pool().spec.kind

    @property
    def saturated(self) -> bool:
        """No capacity for one more invocation right now (all busy, queue full, or draining)."""
        return self._draining or self._pool is None or self._pool.saturated

    @property
    def ready(self) -> bool:
        """True once the warm pool was filled, until draining begins."""
        return self._ready and not self._draining

    @property
    def stats(self) -> RuntimeStats:
        """Warm, busy, queued and the limits; raises RuntimeError before :meth:`start`."""
        return RuntimeStats(self._started_pool().stats, self._in_flight, self.ready, self._draining)

    async def start(self) -> None:
        """Pick the backend, start the egress relay, fill the warm pool (all undone on failure)."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        settings = self.settings
        drop = os.geteuid() == 0
        kind = await asyncio.to_thread(choose_backend, settings, drop)
        self._token_key = await asyncio.to_thread(settings.token_key)
        base = settings.temp_root or _default_temp_root()
        self._root = Path(tempfile.mkdtemp(prefix="clrk-shim-", dir=base))
        self._root.chmod(0o711)  # sandboxes reach their own dirs, cannot list the others
        relay_socket = None
        if kind == "bwrap" and settings.egress_proxy:
            relay_socket = self._root / "egress.sock"
            self._relay = EgressRelay(relay_socket, settings.egress_proxy)
            await self._relay.start()
        self._spawner = Spawner(settings.python)
        await self._spawner.start()
        places: tuple[str, ...] = ()
        if drop:
            # Host-wide, whatever each shim's temp root: every shim here draws from one range.
            locks = _default_temp_root() / "clrk-sandbox-uids"
            self._ids = HostIds(settings.sandbox_uid, settings.sandbox_uids, locks)
            if kind == "plain":  # bubblewrap sandboxes cannot write the host's shared places
                places = await asyncio.to_thread(shared_places)
                await self._clean_up_after_the_dead(places)
        spec = SandboxSpec(kind, settings, self._root, relay_socket, drop, self._spawner, self._ids, places)
        self._pool = SandboxPool(spec)
        await self._pool.start()
        self._ready = True

    async def _clean_up_after_the_dead(self, places: tuple[str, ...]) -> None:
        """Clean the uids of our range that own something in the shared places: a shim killed
        before it could clean up (``/dev/shm`` outlives a container's restart in a pod) must not
        hand its sandboxes' files to ours. A uid another live shim holds is left to it; one a
        process runs as (not a sandbox of ours: a systemd dynamic user, say) is not touched, only
        kept from our sandboxes."""
        assert self._ids is not None and self._spawner is not None
        uids = range(self._ids.first, self._ids.first + self._ids.count)
        found = await asyncio.to_thread(owners, places, uids)
        running = await asyncio.to_thread(running_uids) if found else set()
        for uid in sorted(found):
            if not self._ids.claim(uid):
                continue  # a live shim's sandbox: its own close cleans it
            if uid not in running and await self._spawner.clean(None, uid, uid, places):
                self._ids.give_back(uid)
            else:
                _log.warning("sandbox uid %s set aside: it owns files in %s that are not ours to remove", uid, places)

    async def stop(self) -> None:
        """Refuse new invocations, let in-flight ones finish (each bounded by its deadline),
        then remove every sandbox, the relay and the temp root."""
        self._draining = True
        await self._idle.wait()
        if self._pool is not None:
            await self._pool.close()
        if self._spawner is not None:
            await self._spawner.stop()
        if self._ids is not None:
            self._ids.close()
        if self._relay is not None:
            await self._relay.stop()
        if self._root is not None:
            await asyncio.to_thread(shutil.rmtree, self._root, True)
        self._ready = False

    async def __aenter__(self) -> AgentRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def handle(self, headers: Mapping[str, str], body: bytes) -> Response:
        """Answer one request: ``headers`` with lower-case names, ``body`` already read."""
        forwarded = headers.get(_INVOCATION)
        if self.saturated:  # refuse before any work: under overload, refusals must stay cheap
            return no_capacity(given_or_new(forwarded))
        if len(body) > self.settings.stdin_cap:
            return request_too_large(given_or_new(forwarded), self.settings.stdin_cap)
        try:
            envelope = build_envelope(headers, body, new_id=lambda: given_or_new(forwarded), source=EVENT_SOURCE)
        except EnvelopeError as exc:
            return error_response(400, exc.kind, exc.message, given_or_new(forwarded))
        invocation_id = envelope.event_id
        if self._draining or self._pool is None:
            return no_capacity(invocation_id)
        timeout = self._timeout(headers)
        self._in_flight += 1
        self._idle.clear()
        try:
            response = await serve_invocation(
                self._pool,
                self.settings,
                headers=headers,
                invocation_id=invocation_id,
                envelope=envelope.body,
                token_key=self._token_key,
                time_limit=timeout,
                tracer=self._tracer,
            )
        except NoCapacity:
            response = no_capacity(invocation_id)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()
        return response

    def _timeout(self, headers: Mapping[str, str]) -> float:
        """``spec.timeout``, less what the ingress says was already spent upstream."""
        timeout = self.settings.timeout
        remaining = headers.get(_TIMEOUT, "")
        if remaining.strip().isdigit():
            timeout = min(timeout, int(remaining) / 1000)
        return timeout

    def _started_pool(self) -> SandboxPool:
        if self._pool is None:
            raise RuntimeError("the runtime is not started")
        return self._pool


def _default_temp_root() -> Path:
    """``/dev/shm`` where it is a writable tmpfs (making and removing a sandbox's directories
    there costs a fraction of a disk's), else the system temp dir."""
    shm = Path("/dev/shm")  # noqa: S108 - a private 0700 dir is made inside
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return Path(tempfile.gettempdir())
