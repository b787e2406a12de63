"""``AgentRuntime``: one TaskAgent's shim, composable in-process (``clrk dev``) or served over HTTP.

    runtime = AgentRuntime(RuntimeSettings(command=["./agent.sh"], warm_pool=2))
    await runtime.start()
    response = await runtime.handle({"content-type": "application/json"}, b'{"q": 1}')
    answer = await runtime.stream(headers, body)    # a refusal (Response), or a StreamedAnswer
    unsubscribe = runtime.watch_output(lambda invocation_id, chunk: ...)   # every run's stdout, live
    await runtime.stop()          # drains: in-flight invocations finish first

Cancelling :meth:`~AgentRuntime.handle` (or closing a streamed answer early) is how an invocation
whose caller went away ends: its agent's whole tree is killed, its sandbox removed, its slot
freed, and the log says ``[<id>] caller went away; killed``.

The core is pure (:mod:`~clrk_runtime.protocol.envelope`, :mod:`~clrk_runtime.invocation.environment`,
:mod:`~clrk_runtime.invocation.outcomes`); this class wires them to the pool and the sandboxes, and keeps
one span per invocation (OpenTelemetry API only).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from opentelemetry import trace
from opentelemetry.trace import TracerProvider

from clrk_runtime.invocation.outcomes import Response, error_response, no_capacity, request_too_large
from clrk_runtime.invocation.running import OutputListener
from clrk_runtime.invocation.streaming import OutputQueue, StreamedAnswer
from clrk_runtime.launching import landlock
from clrk_runtime.launching.spawner import Spawner
from clrk_runtime.protocol.envelope import EnvelopeError, build_envelope
from clrk_runtime.protocol.ids import new_invocation_id
from clrk_runtime.protocol.streams import OUTCOME_BODY_HEADER
from clrk_runtime.sandbox.backends import choose_backend
from clrk_runtime.sandbox.identities import IdentityRelay
from clrk_runtime.sandbox.places import owners, running_uids, shared_places
from clrk_runtime.sandbox.relay import EgressRelay
from clrk_runtime.sandbox.sandboxes import SandboxKind, SandboxSpec
from clrk_runtime.sandbox.uids import HostIds
from clrk_runtime.service.handling import serve_invocation
from clrk_runtime.service.pool import NoCapacity, PoolStats, SandboxPool
from clrk_runtime.service.verifying import Refusal, RequestVerifier, read_request_key
from clrk_runtime.service.warming import WARM_START_PREFIX, WarmStarts
from clrk_runtime.settings import RuntimeSettings

__all__ = [
    "EVENT_SOURCE",
    "REPORT_PREFIX",
    "WARM_START_PREFIX",
    "AgentRuntime",
    "OutputWatcher",
    "RuntimeStats",
    "SandboxReport",
]

EVENT_SOURCE = "/clrk/shim"
"""``source`` of the envelope the shim makes for a request that is not a CloudEvent (a direct
call; what comes through the ingress already is one)."""
_log = logging.getLogger(__name__)
_SCOPES = 6
"""The Landlock ABI that brought scoped signals."""
REPORT_PREFIX = "clrk-sandbox "
"""What starts :meth:`SandboxReport.line` (a fixed prefix, then JSON, up to the end of the line)."""
type OutputWatcher = Callable[[str, bytes], None]
"""``watcher(invocation_id, chunk)``: each stdout chunk of every invocation, ``b""`` once at its end
(see :meth:`AgentRuntime.watch_output`)."""
_OUTCOME_BODY = "base64"
"""The one value :data:`~clrk_runtime.protocol.streams.OUTCOME_BODY_HEADER` takes."""


@dataclass(frozen=True, slots=True)
class _Admitted:
    """A request that may run: its id, its envelope, its time limit."""

    invocation_id: str
    envelope: bytes
    timeout: float
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class RuntimeStats:
    """A live snapshot, e.g. for a TUI (see :attr:`AgentRuntime.stats`)."""

    pool: PoolStats
    in_flight: int
    ready: bool
    draining: bool


@dataclass(frozen=True, slots=True)
class SandboxReport:
    """How this shim's sandboxes are confined (see :attr:`AgentRuntime.sandbox_report`).

    The shim logs it once at start as one machine-readable line (:meth:`line`):
    :data:`REPORT_PREFIX`, then :meth:`details` as compact JSON, e.g.
    ``clrk-sandbox {"kind":"plain","landlockAbi":7,"kernelLandlockAbi":7,"missing":[]}``. Its log
    goes to stderr, so the line lands in the pod's log after the logging prefix; the operator reads
    it there through the API server (:mod:`clrk.cluster.confinement`), which needs no connection to
    the pod, and puts what is missing on the TaskAgent's status."""

    kind: SandboxKind
    landlock_abi: int
    """The Landlock ABI plain sandboxes use (0: none; bubblewrap sandboxes use none, though the
    spawner scopes its signals whenever the kernel can: see :class:`Spawner`)."""
    kernel_landlock_abi: int
    missing: tuple[str, ...]
    """Pieces of a plain sandbox's confinement this kernel (or ``landlock_abi``) lacks (see
    :data:`clrk_runtime.launching.landlock.PIECES`); empty for bubblewrap."""

    def details(self) -> dict[str, object]:
        """The JSON form ``/readyz`` shows."""
        if self.kind != "plain":
            return {"kind": self.kind}
        return {
            "kind": self.kind,
            "landlockAbi": self.landlock_abi,
            "kernelLandlockAbi": self.kernel_landlock_abi,
            "missing": list(self.missing),
        }

    def line(self) -> str:
        """The machine-readable line the shim logs once at start (see the class's docstring)."""
        return REPORT_PREFIX + json.dumps(self.details(), separators=(",", ":"))


class AgentRuntime:
    def __init__(self, settings: RuntimeSettings, *, tracer_provider: TracerProvider | None = None) -> None:
        """``tracer_provider``: where invocation spans go (default: the global provider)."""
        if not settings.command:
            raise ValueError("no entrypoint: give the agent's command after `--`")
        self.settings = settings
        self._tracer = trace.get_tracer("clrk_runtime", tracer_provider=tracer_provider)
        self._pool: SandboxPool | None = None
        self._relay: EgressRelay | None = None
        self._identities: IdentityRelay | None = None
        self._spawner: Spawner | None = None
        self._ids: HostIds | None = None
        self._root: Path | None = None
        self._token_key: bytes | None = None
        self._verifier = RequestVerifier(None, settings.agent)  # replaced at start, key read
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._ready = False
        self._draining = False
        self._sandbox_report: SandboxReport | None = None
        self._watchers: list[OutputWatcher] = []
        self._filling: asyncio.Task[None] | None = None
        self._broken = ""

    @property
    def sandbox_report(self) -> SandboxReport | None:
        """The sandboxes' kind and, for plain ones, the Landlock pieces they go without (None
        until :meth:`start` picked the backend)."""
        return self._sandbox_report

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
    def broken(self) -> str:
        """Why the warm pool could not be filled after :meth:`start` returned early ("" if it
        could, or is still being filled): the process should be restarted (``/livez`` says so)."""
        return self._broken

    @property
    def stats(self) -> RuntimeStats:
        """Warm, busy, queued and the limits; raises RuntimeError before :meth:`start`."""
        return RuntimeStats(self._started_pool().stats, self._in_flight, self.ready, self._draining)

    async def start(self, *, wait: bool = True) -> None:
        """Pick the backend, start the egress relay, fill the warm pool (all undone on failure).

        ``wait=False`` returns before the warm pool is full (:attr:`ready` turns true once it
        is): an HTTP server then answers its liveness probe while warm-started agents take their
        time (a pod's liveness probe would otherwise kill a slow start-up before it could end)."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        if wait:
            try:
                await self._fill()
            except BaseException:
                await self.stop()
                raise
        else:
            self._filling = asyncio.create_task(self._fill_or_break(), name="clrk-fill-pool")

    async def _fill(self) -> None:
        assert self._pool is not None
        await self._pool.start()
        self._ready = True

    async def _fill_or_break(self) -> None:
        try:
            await self._fill()
        except Exception as exc:
            self._broken = f"the warm pool could not be filled: {exc}"
            _log.exception("%s: %s", self.settings.agent, self._broken)

    async def _start(self) -> None:
        settings = self.settings
        drop = os.geteuid() == 0
        kind = await asyncio.to_thread(choose_backend, settings, drop)
        self._sandbox_report = report = _sandbox_report(kind, settings)
        self._token_key = await asyncio.to_thread(settings.token_key)
        self._verifier = RequestVerifier(
            await asyncio.to_thread(read_request_key, settings.request_key_file), settings.agent
        )
        base = settings.temp_root or _default_temp_root()
        self._root = Path(tempfile.mkdtemp(prefix="clrk-shim-", dir=base))
        self._root.chmod(0o711)  # sandboxes reach their own dirs, cannot list the others
        relay_socket = None
        if kind == "bwrap" and settings.egress_proxy:
            relay_socket = self._root / "egress.sock"
        if settings.warm_start and settings.egress_proxy:
            # Warm-started agents hold credentials of their own sandbox's, bound to an invocation
            # only when it comes: the identity relay sends their egress on under the right name.
            self._identities = IdentityRelay(settings.egress_proxy, socket_path=relay_socket)
            await self._identities.start()
        elif relay_socket is not None and settings.egress_proxy:
            self._relay = EgressRelay(relay_socket, settings.egress_proxy)
            await self._relay.start()
        # With scoped signals, sweeping a sandbox's uid never reaches a host process of that uid.
        scoped = landlock.abi_in_use(settings.landlock_abi, report.kernel_landlock_abi) >= _SCOPES
        self._spawner = Spawner(settings.python, scope_signals=scoped)
        await self._spawner.start()
        places: tuple[str, ...] = ()
        if drop:
            # Host-wide, whatever each shim's temp root: every shim here draws from one range.
            locks = _default_temp_root() / "clrk-sandbox-uids"
            self._ids = HostIds(settings.sandbox_uid, settings.sandbox_uids, locks)
            if kind == "plain":  # bubblewrap sandboxes cannot write the host's shared places
                places = await asyncio.to_thread(shared_places)
                await self._clean_up_after_the_dead(places)
        spec = SandboxSpec(
            kind,
            settings,
            self._root,
            relay_socket,
            drop,
            self._spawner,
            self._ids,
            places,
            landlock_abi=report.landlock_abi,
            identities=self._identities,
        )
        warm_starts = WarmStarts(settings, token_key=self._token_key, relay=self._identities)
        self._pool = SandboxPool(spec, warm_starts)

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
        if self._filling is not None:
            self._filling.cancel()
            await asyncio.gather(self._filling, return_exceptions=True)
        await self._idle.wait()
        if self._pool is not None:
            await self._pool.close()
        if self._spawner is not None:
            await self._spawner.stop()
        if self._ids is not None:
            self._ids.close()
        if self._relay is not None:
            await self._relay.stop()
        if self._identities is not None:
            await self._identities.stop()
        if self._root is not None:
            await asyncio.to_thread(shutil.rmtree, self._root, True)
        self._ready = False

    async def __aenter__(self) -> AgentRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def handle(self, headers: Mapping[str, str], body: bytes) -> Response:
        """Answer one request: ``headers`` with lower-case names (one value each, see
        :func:`~clrk_runtime.protocol.headers.request_headers`), ``body`` already read.

        The invocation id is the ingress's in a request it signed, else minted here
        (:mod:`~clrk_runtime.service.verifying`); a refused request runs nothing. Cancelled, the
        invocation is killed (see the module's docstring) before the cancellation goes on."""
        admitted = self._admit(headers, body)
        if isinstance(admitted, Response):
            return admitted
        return await self._serve(admitted)

    async def stream(self, headers: Mapping[str, str], body: bytes) -> Response | StreamedAnswer:
        """Answer one request as events (``Accept: text/event-stream``): a refusal before the agent
        runs is a :class:`Response` (400, 401, 409, 413, 503, a 504 while queued), as with
        :meth:`handle`; once the invocation has its sandbox, a :class:`StreamedAnswer` of the
        running invocation, which the caller must :meth:`~StreamedAnswer.aclose`.

        ``X-Clrk-Outcome-Body: base64`` asks for the buffered answer's exact bytes in the outcome
        event; any other value is a 400 naming the header. Cancelled while queued, the
        invocation is dropped (killed, had it started) before the cancellation goes on."""
        asked = headers.get(OUTCOME_BODY_HEADER.lower())
        if asked is not None and asked.strip().lower() != _OUTCOME_BODY:
            message = f"header {OUTCOME_BODY_HEADER}: the one value it takes is {_OUTCOME_BODY}, not {asked[:40]!r}"
            return error_response(400, "invalid_outcome_body", message, new_invocation_id())
        admitted = self._admit(headers, body)
        if isinstance(admitted, Response):
            return admitted
        loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = loop.create_future()
        queue = OutputQueue()

        def start() -> None:
            if not started.done():
                started.set_result(None)

        run = asyncio.ensure_future(self._serve(admitted, on_start=start, on_output=queue.put))
        try:
            await asyncio.wait((started, run), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            run.cancel()
            await asyncio.wait({run})
            raise
        if not started.done():
            return run.result()  # refused before it ran: no capacity, or its deadline passed queued
        return StreamedAnswer(
            admitted.invocation_id, run, queue, self.settings.heartbeat_seconds, with_body=asked is not None
        )

    def watch_output(self, watcher: OutputWatcher) -> Callable[[], None]:
        """Call ``watcher(invocation_id, chunk)`` with each stdout chunk of every invocation from
        now on (within the stdout cap), and ``watcher(invocation_id, b"")`` once when an invocation
        that started ends; e.g. ``clrk dev``'s TUI, showing a run's output live. It runs on the
        event loop and must be quick; what it raises is logged, never the run's. Returns the
        function that stops the watching."""
        self._watchers.append(watcher)

        def unsubscribe() -> None:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

        return unsubscribe

    def _admit(self, headers: Mapping[str, str], body: bytes) -> _Admitted | Response:
        """What may run of a request, or its refusal (checked before any work: under overload,
        refusals must stay cheap)."""
        try:
            admission = self._verifier.admit(headers, body)
        except Refusal as refusal:
            _log.warning("refused a request for %s: %s", self.settings.agent, refusal.message)
            return error_response(refusal.status, refusal.kind, refusal.message, new_invocation_id())
        invocation_id = admission.invocation_id
        if self.saturated:
            return no_capacity(invocation_id)
        if len(body) > self.settings.stdin_cap:
            return request_too_large(invocation_id, self.settings.stdin_cap)
        try:
            envelope = build_envelope(headers, body, invocation_id=invocation_id, source=EVENT_SOURCE)
        except EnvelopeError as exc:
            return error_response(400, exc.kind, exc.message, invocation_id)
        if self._draining or self._pool is None:
            return no_capacity(invocation_id)
        timeout = self.settings.timeout
        if admission.timeout is not None:  # what the ingress says is left (it can only shorten)
            timeout = min(timeout, admission.timeout)
        return _Admitted(invocation_id, envelope.body, timeout, headers)

    async def _serve(
        self,
        admitted: _Admitted,
        *,
        on_start: Callable[[], None] | None = None,
        on_output: OutputListener | None = None,
    ) -> Response:
        """Run an admitted invocation, counted in flight (:meth:`stop` waits for it)."""
        assert self._pool is not None
        invocation_id = admitted.invocation_id
        ran = False

        def started() -> None:
            nonlocal ran
            ran = True
            if on_start is not None:
                on_start()

        def output(chunk: bytes) -> None:
            if on_output is not None:
                on_output(chunk)
            self._tell_watchers(invocation_id, chunk)

        self._in_flight += 1
        self._idle.clear()
        try:
            return await serve_invocation(
                self._pool,
                self.settings,
                headers=admitted.headers,
                invocation_id=invocation_id,
                envelope=admitted.envelope,
                token_key=self._token_key,
                time_limit=admitted.timeout,
                tracer=self._tracer,
                on_start=started,
                on_output=output,
            )
        except NoCapacity:
            return no_capacity(invocation_id)
        except asyncio.CancelledError:
            if ran:
                _log.warning("[%s] caller went away; killed", invocation_id)
            else:
                _log.warning("[%s] caller went away while queued", invocation_id)
            raise
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()
            if ran:
                self._tell_watchers(invocation_id, b"")

    def _tell_watchers(self, invocation_id: str, chunk: bytes) -> None:
        for watcher in tuple(self._watchers):
            try:
                watcher(invocation_id, chunk)
            except Exception:
                _log.exception("[%s] an output watcher failed", invocation_id)

    def _started_pool(self) -> SandboxPool:
        if self._pool is None:
            raise RuntimeError("the runtime is not started")
        return self._pool


def _sandbox_report(kind: SandboxKind, settings: RuntimeSettings) -> SandboxReport:
    """What plain sandboxes get here (one system call), logged once as the report line; a
    warning, once, for what they lack."""
    kernel = landlock.kernel_abi()
    if kind != "plain":
        report = SandboxReport(kind, 0, kernel, ())
        _log.info("%s", report.line())
        return report
    abi = landlock.abi_in_use(settings.landlock_abi, kernel)
    missing = tuple(landlock.missing(abi))
    if missing:
        capped = f", capped by landlock_abi (CLRK_LANDLOCK_ABI={settings.landlock_abi})" if abi < kernel else ""
        _log.warning(
            "plain sandboxes run without %s: Landlock ABI %d in use (the kernel offers %d%s); "
            "no_new_privs and resource limits apply",
            ", ".join(missing),
            abi,
            kernel,
            capped,
        )
    report = SandboxReport(kind, abi, kernel, missing)
    _log.info("%s", report.line())
    return report


def _default_temp_root() -> Path:
    """``/dev/shm`` where it is a writable tmpfs (making and removing a sandbox's directories
    there costs a fraction of a disk's), else the system temp dir."""
    shm = Path("/dev/shm")  # noqa: S108 - a private 0700 dir is made inside
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return Path(tempfile.gettempdir())
