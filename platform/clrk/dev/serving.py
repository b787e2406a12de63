"""``clrk dev``: the ingress, one shim per TaskAgent and the egress gateway, in one process.

The same code as in a cluster, composed in one asyncio loop: the ingress forwards in-process to
each agent's shim (an ASGI app), shims reach the network only through the embedded egress
gateway with per-invocation credentials signed by a key made fresh at every start.

The ingress signs every request it forwards, as in a cluster: the dev server makes a platform key
of its own at every start, and gives each shim its namespace's ``request`` key (in a file of a
0700 folder of the system's temp dir, removed at stop), so a shim here runs only what the
ingress sent, with the invocation id the ingress minted.

Async invocations (``Prefer: respond-async``) are kept in ``<state_dir>/invocations.sqlite3``
and run as tasks of this process (:class:`~clrk.ingress.LocalDispatcher`): a restart keeps the
finished ones (until ``async_retention``), runs the ones that had not reached their agent, and
says ``interrupted`` of the ones it cut. Their callbacks are signed with the persistent key of
:mod:`clrk.dev.callback_keys`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from clrk.api import Caller
from clrk.api.egress import SecretRef
from clrk.api.schedules import schedule_path
from clrk.dev.agents import copy_binds, runtime_settings
from clrk.dev.callback_keys import CallbackKeys
from clrk.dev.doctor import check, requirements
from clrk.dev.scheduling import Scheduler
from clrk.dev.settings import DevSettings
from clrk.dev.staging import Stage, stage_bundle
from clrk.egress.gateway import EgressGateway
from clrk.egress.secrets import StaticSecrets, secrets_from_specs
from clrk.egress.settings import EgressSettings
from clrk.errors import ClrkError, EgressPolicyError
from clrk.ingress import (
    AgentTarget,
    AsyncRuns,
    CallbackSender,
    CallerKey,
    CallerKeys,
    FileRunStore,
    IngressSettings,
    InProcessForwarder,
    InvocationRecord,
    LocalDispatcher,
    Runner,
    RunRecord,
    Usage,
    caller_key,
    create_app,
)
from clrk.ingress.settings import is_loopback
from clrk.manifests import Bundle, egress_config, load_bundle
from clrk_runtime.protocol.headers import AGENT_HEADER
from clrk_runtime.protocol.keys import namespace_key, namespace_of, schedule_token
from clrk_runtime.server.app import ShimApp
from clrk_runtime.server.protocols import http_protocol
from clrk_runtime.service.runtime import AgentRuntime

__all__ = ["DevServer", "missing_tools"]

log = logging.getLogger("clrk.dev")
WARM_WAIT_S = 10.0
"""Seconds ``clrk dev`` waits, at start and at each reload, for its agents' warm pools to fill
(warm-started agents say they are ready) before serving without them: a request that finds no
ready sandbox is served by one started for it, and a hung start-up is replaced in the background
(after ``CLRK_WARM_START_TIMEOUT``), never holding ``clrk dev`` up."""


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling (``clrk dev`` owns shutdown) that says when its
    startup is over, and keeps the reason when it could not listen rather than exiting the process."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.startup_over = asyncio.Event()
        """Set once it listens (``started``), or once it has given up or ended before that."""
        self.failure: BaseException | None = None
        """Why it could not listen, when it could not."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().serve(sockets)
        finally:
            self.startup_over.set()  # also when it ended before its startup did

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        except SystemExit as exc:  # uvicorn's answer to a port it cannot bind (it logged why)
            self.failure = exc.__context__ or exc
            self.should_exit = True  # so serve() returns without its main loop
        finally:
            self.startup_over.set()


def missing_tools(bundle: Bundle, path: str) -> list[str]:
    """``agent: command (package, from the Dockerfile's RUN)`` for each tool the host lacks."""
    missing = []
    for ref, context in sorted(bundle.contexts.items()):
        for result in check(requirements(context.image.run), path=path):
            if result.found is None:
                req = result.requirement
                missing.append(f"{ref}: {req.command} (the image installs {req.package} with {req.installer})")
    return missing


def _caller_keys(callers: list[Caller], values: StaticSecrets) -> list[CallerKey]:
    keys = []
    for caller in callers:
        key = caller_key(caller, lambda name, key: values.get(SecretRef(name=name, key=key)))
        if key is None:
            ref = caller.spec.key_secret_ref
            assert ref is not None
            raise EgressPolicyError(
                f"Caller {caller.ref}: keySecretRef {ref.name}/{ref.key} has no value: "
                f"add --secret {ref.name}=ENVVAR:{ref.key}"
            )
        keys.append(key)
    return keys


@dataclass
class DevServer:
    settings: DevSettings
    environ: Mapping[str, str]
    on_finished: Callable[[InvocationRecord], None] | None = None
    extra_routes: Sequence[BaseRoute] = ()
    callers: CallerKeys = field(default_factory=CallerKeys)
    """Who may call which agent: filled at :meth:`start` (closed until then); routes given in
    ``extra_routes`` may authenticate with it too."""
    records: deque[InvocationRecord] = field(default_factory=lambda: deque(maxlen=500))
    runtimes: dict[str, AgentRuntime] = field(default_factory=dict)
    bundle: Bundle | None = None
    egress: EgressGateway | None = None
    port: int | None = None
    _forwarder: InProcessForwarder = field(init=False)
    _server: _Server | None = None
    _serving: asyncio.Task[None] | None = None
    _token_key: bytes = field(default_factory=lambda: secrets.token_urlsafe(32).encode("ascii"))
    _platform_key: bytes = field(default_factory=lambda: secrets.token_urlsafe(32).encode("ascii"))
    _keys_dir: Path | None = None
    _secrets: StaticSecrets = field(default_factory=StaticSecrets)
    _mtimes: dict[Path, float] = field(default_factory=dict)
    _app: Starlette | None = None
    _scheduler: Scheduler | None = None
    _stage: Stage | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _reloading: asyncio.Lock = field(default_factory=asyncio.Lock)
    runs: AsyncRuns | None = None
    """Async invocations: their store and dispatcher (set at :meth:`start`)."""
    callback_keys: CallbackKeys | None = None
    """The key async callbacks are signed with (set at :meth:`start`)."""
    _dispatcher: LocalDispatcher | None = None
    _callbacks: CallbackSender | None = None
    _run_store: FileRunStore | None = None

    def __post_init__(self) -> None:
        self._forwarder = InProcessForwarder(saturated=self._saturated, platform_key=self._platform_key)

    def _saturated(self, ref: str) -> bool:
        runtime = self.runtimes.get(ref)
        return runtime is not None and runtime.saturated

    # -- loading ---------------------------------------------------------------------------
    def load(self) -> Bundle:
        """Read and check the manifests, the Dockerfiles, the secrets and the host's tools."""
        if not self.settings.apply:
            raise ClrkError("nothing to serve: give at least one --apply DIR")
        bundle = load_bundle(self.settings.apply)
        if not bundle.manifests.agents:
            raise ClrkError(f"no TaskAgent in {', '.join(self.settings.apply)}")
        missing = missing_tools(bundle, self.settings.agent_path)
        if missing:
            lines = "\n  ".join(missing)
            raise ClrkError(
                "this host lacks tools the agents' images install (clrk dev runs agents on the "
                f"host's filesystem):\n  {lines}\nInstall them, or check with `clrk doctor -f DIR`."
            )
        provided = {(name, key) for name, key in self._secret_keys()}
        for policy in bundle.manifests.policies:
            ref = policy.spec.secret_key_ref
            if (ref.name, ref.key) not in provided:
                source = bundle.manifests.source_of(policy).source
                raise ClrkError(
                    f"{source}: spec.secretKeyRef: secret {ref.name}/{ref.key} is not provided: "
                    f"add --secret {ref.name}=ENVVAR:{ref.key}"
                )
        return bundle

    def _secret_keys(self) -> Iterator[tuple[str, str]]:
        from clrk.egress.secrets import parse_secret_spec

        for spec in self.settings.secrets:
            name, _, key = parse_secret_spec(spec)
            yield name, key

    def _snapshot(self) -> dict[Path, float]:
        files: list[Path] = []
        for given in self.settings.apply:
            path = Path(given)
            files += sorted(path.rglob("*")) if path.is_dir() else [path]
        if self.bundle is not None:
            for context in self.bundle.contexts.values():
                files.append(context.path / "Dockerfile")
                for source in copy_binds(context).values():
                    path = Path(source)
                    files += sorted(path.rglob("*")) if path.is_dir() else [path]
        out = {}
        for file in files:
            with contextlib.suppress(OSError):
                if file.is_file():
                    out[file] = file.stat().st_mtime
        return out

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        settings = self.settings
        self._stopping.clear()
        self._secrets = secrets_from_specs(settings.secrets, self.environ)
        bundle = self.load()
        egress_settings = EgressSettings.model_validate(
            {
                "state_dir": settings.state_dir,
                "egress_listen_host": "127.0.0.1",
                "egress_listen_port": 0,
                "egress_upstreams": settings.egress_upstreams,
                "egress_upstream_ca": settings.egress_upstream_ca,
            }
        )
        self.egress = EgressGateway(
            egress_settings,
            egress_config(bundle.manifests),
            self._secrets,
            token_key=self._token_key,
        )
        await self.egress.start()
        try:
            self.callback_keys = CallbackKeys(settings.state_dir)
            await self._serve_agents(bundle)
            ingress = IngressSettings.model_validate(
                {"host": settings.host, "port": settings.port, "auth": settings.auth}
            )
            callers = self.callers
            callers.open_mode = ingress.open_mode
            callers.replace(_caller_keys(bundle.manifests.callers, self._secrets))
            self.runs = await self._start_runs(ingress)
            self._app = app = create_app(
                self._forwarder,
                callers,
                ingress,
                self._finished,
                extra_routes=self.extra_routes,
                schedule_key=self._platform_key,
                runs=self.runs,
            )
            config = uvicorn.Config(
                app,
                host=settings.host,
                port=settings.port,
                lifespan="off",
                log_level="warning",
                access_log=False,
                http=http_protocol(ingress.head_timeout_seconds),
            )
            self._server = server = _Server(config)
            self._serving = asyncio.create_task(server.serve())
            await server.startup_over.wait()
            if not server.started:
                serving, self._server, self._serving = self._serving, None, None
                await serving  # raises what ended it, if something did
                raise ClrkError(f"cannot listen on {settings.host}:{settings.port}: {server.failure}")
            self.port = server.servers[0].sockets[0].getsockname()[1]
        except BaseException:
            await self.stop()
            raise
        self._mtimes = self._snapshot()
        self._scheduler = Scheduler(self._post)
        self._scheduler.replace(bundle.manifests.schedules)
        if callers.open_mode:
            log.warning(
                "open mode: anyone who reaches %s:%s may call every agent (loopback only)",
                settings.host,
                self.port,
            )
        elif not callers.keys:
            log.warning("keys mode with no Caller declared: every request will get 401")

    async def _start_runs(self, ingress: IngressSettings) -> AsyncRuns:
        """The store of async invocations, their runner and dispatcher; resumes what the
        previous process left (see :class:`~clrk.ingress.LocalDispatcher`)."""
        settings = self.settings
        assert self.callback_keys is not None
        self._run_store = store = await FileRunStore.open(
            settings.state_dir / "invocations.sqlite3",
            retention_s=settings.async_retention,
            max_result_bytes_total=settings.async_results_max_bytes,
        )
        local = is_loopback(settings.host)  # a receiver on this machine; not when serving others
        self._callbacks = CallbackSender(
            store,
            self.callback_keys.secret,
            allow_loopback=local,
            attempts=settings.callback_attempts,
            backoff=settings.callback_backoff,
        )
        runner = Runner(
            store,
            self._forwarder,
            callbacks=self._callbacks,
            usage=self._usage,
            retention_s=settings.async_retention,
            grace_s=ingress.grace_seconds,
            on_end=self._async_ended,
        )
        self._dispatcher = LocalDispatcher(runner, store)
        await self._dispatcher.start()
        return AsyncRuns(
            store,
            self._dispatcher,
            retention_s=settings.async_retention,
            heartbeat_s=settings.heartbeat,
            allow_loopback_callbacks=local,
        )

    async def _usage(self, invocation_id: str) -> Usage | None:
        """What the embedded gateway counted for an invocation."""
        if self.egress is None:
            return None
        totals = self.egress.usage.totals(invocation_id)
        return Usage(
            input_tokens=totals.input_tokens,
            output_tokens=totals.output_tokens,
            cache_creation_input_tokens=totals.cache_creation_input_tokens,
            cache_read_input_tokens=totals.cache_read_input_tokens,
            model_calls=len(self.egress.usage.calls(invocation_id)),
        )

    def _async_ended(self, record: RunRecord) -> None:
        """An async invocation ended: as a synchronous one's answer, its credentials die now
        and the requests pane shows it (a cancelled run, which has no answer, as 409)."""
        end = record.finished_at if record.finished_at is not None else time.time()
        began = record.started_at if record.started_at is not None else record.created_at
        status = record.http_status if record.http_status is not None else 409
        self._finished(
            InvocationRecord(record.invocation_id, record.agent, status, max(0.0, end - began), record.caller, end)
        )

    async def _post(self, headers: dict[str, str], body: bytes) -> int:
        """One scheduled run through the ingress, in-process: posted where a PingSource posts in a
        cluster, the schedule route with the agent's token (made from this server's platform key),
        so it needs no Caller key."""
        assert self._app is not None
        namespace, name = headers[AGENT_HEADER].split("/", 1)
        path = schedule_path(namespace, name, schedule_token(self._platform_key, namespace, name))
        transport = httpx.ASGITransport(app=self._app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
            response = await client.post(path, headers=headers, content=body, timeout=None)
        return response.status_code

    async def _serve_agents(self, bundle: Bundle) -> None:
        """Start a shim for each agent of ``bundle``, swap them in, stop the ones replaced."""
        assert self.egress is not None and self.egress.port is not None and self.egress.ca is not None
        started: dict[str, AgentRuntime] = {}
        stage = stage_bundle(bundle, self.egress.ca.bundle, self.settings.agent_path, other_user=os.geteuid() == 0)
        try:
            for agent in bundle.manifests.agents:
                runtime = AgentRuntime(
                    runtime_settings(
                        agent,
                        bundle,
                        egress_proxy=f"127.0.0.1:{self.egress.port}",
                        token_key=self._token_key,
                        ca_bundle=stage.ca_bundle,
                        sandbox=self.settings.sandbox,
                        agent_path=stage.path,
                        binds=stage.binds.get(agent.ref, {}),
                        request_key_file=self._request_key_file(namespace_of(agent.ref)),
                        heartbeat_seconds=self.settings.heartbeat,
                    )
                )
                await runtime.start(wait=False)  # every agent's pool fills at once
                started[agent.ref] = runtime
            await _until_filled(started)
        except BaseException:
            await asyncio.gather(*(r.stop() for r in started.values()), return_exceptions=True)
            stage.remove()
            raise
        old, self.runtimes, self.bundle = self.runtimes, started, bundle
        old_stage, self._stage = self._stage, stage
        callbacks = {a.ref: a.spec.callback.url if a.spec.callback else None for a in bundle.manifests.agents}
        self._forwarder.set_apps(
            {
                ref: (AgentTarget(ref, runtime.settings.timeout, callbacks.get(ref)), ShimApp(runtime, lifespan=False))
                for ref, runtime in started.items()
            }
        )
        if self.callback_keys is not None:
            self.callback_keys.publish(namespace_of(ref) for ref in started)
        await asyncio.gather(*(r.stop() for r in old.values()), return_exceptions=True)
        if old_stage is not None:
            old_stage.remove()

    def _request_key_file(self, namespace: str) -> Path:
        """The file holding ``namespace``'s request key (written once per start, readable by
        this process's user only)."""
        if self._keys_dir is None:  # 0700; not the state dir, which agents may list
            self._keys_dir = Path(tempfile.mkdtemp(prefix="clrk-dev-keys-"))
        path = self._keys_dir / f"request-{namespace}.key"
        if not path.exists():
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(namespace_key(self._platform_key, "request", namespace))
        return path

    async def reload_if_changed(self) -> bool:
        """Reload when a manifest or Dockerfile changed; keep serving the old set on errors."""
        async with self._reloading:
            if self._stopping.is_set():
                return False
            snapshot = self._snapshot()
            if snapshot == self._mtimes:
                return False
            self._mtimes = snapshot
            try:
                bundle = self.load()
                await self._serve_agents(bundle)
            except ClrkError as exc:
                log.error("reload failed, still serving the previous manifests: %s", exc)
                return False
            assert self.egress is not None
            self.egress.update_config(egress_config(bundle.manifests))
            if self._scheduler is not None:
                self._scheduler.replace(bundle.manifests.schedules)
            log.info("reloaded: %s", ", ".join(sorted(self.runtimes)))
            return True

    async def watch(self) -> None:
        """Check the files for changes every ``reload_interval`` seconds (a poll: it needs no
        inotify and sees edits on any filesystem) until :meth:`stop`, when it returns at once."""
        while True:
            try:
                async with asyncio.timeout(self.settings.reload_interval):
                    await self._stopping.wait()
                return
            except TimeoutError:
                await self.reload_if_changed()

    async def stop(self) -> None:
        """Stop taking requests, let in-flight synchronous invocations finish, then stop every
        piece. Async runs under way are cut first (they may run for an hour): each ends
        ``interrupted``, or goes back to the queue if it had not reached its agent yet, so that
        readers of their events end too (before a reload under way is waited for: it may be
        waiting for the shims it replaced to finish their runs). A reload under way finishes
        first (it starts shims too); :meth:`watch` returns and none starts."""
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self.runs is not None:  # followers of async runs' events are told to come back later
            self.runs.stopping.set()
        if self._dispatcher is not None:  # an async run accepted from now on stays queued for the next start
            dispatcher, self._dispatcher = self._dispatcher, None
            await dispatcher.aclose()
        async with self._reloading:
            if self._scheduler is not None:
                self._scheduler.stop()
            if self._server is not None and self._serving is not None:
                await self._serving
                self._server = self._serving = None
            runtimes, self.runtimes = self.runtimes, {}
            await asyncio.gather(*(r.stop() for r in runtimes.values()), return_exceptions=True)
            if self._stage is not None:
                self._stage.remove()
                self._stage = None
            await self._forwarder.aclose()
            if self._callbacks is not None:
                await self._callbacks.aclose()
                self._callbacks = None
            if self._run_store is not None:
                await self._run_store.aclose()
                self._run_store = None
            self.runs = None
            if self.egress is not None:
                await self.egress.stop()
                self.egress = None
            if self._keys_dir is not None:
                shutil.rmtree(self._keys_dir, ignore_errors=True)
                self._keys_dir = None

    def secret_values(self) -> list[str]:
        """Every secret value this process holds, so log filters can scrub them."""
        return self._secrets.values()

    def _finished(self, record: InvocationRecord) -> None:
        if self.egress is not None:  # its proxy credentials die with it, not at its deadline
            self.egress.revoke(record.invocation_id)
        self.records.append(record)
        if self.on_finished is not None:
            self.on_finished(record)

    def curl_commands(self) -> list[str]:
        """The exact command to call each agent."""
        return [
            f"curl -sS http://localhost:{self.port}/ -H 'content-type: application/json' "
            f"-H 'X-Clrk-TaskAgent: {ref}' --data '{{}}'"
            for ref in sorted(self.runtimes)
        ]


async def _until_filled(runtimes: dict[str, AgentRuntime]) -> None:
    """Wait up to :data:`WARM_WAIT_S` for every runtime's warm pool; raise if one cannot be filled
    at all (its sandboxes cannot be made); log the ones still starting after the wait."""
    loop = asyncio.get_running_loop()
    until = loop.time() + WARM_WAIT_S
    while True:
        for ref, runtime in runtimes.items():
            if runtime.broken:
                raise ClrkError(f"{ref}: {runtime.broken}")
        waiting = sorted(ref for ref, runtime in runtimes.items() if not runtime.ready)
        if not waiting:
            return
        if loop.time() >= until:
            log.warning(
                "%s: warm sandboxes still starting after %gs; serving meanwhile (a request that finds none"
                " ready gets a sandbox started for it)",
                ", ".join(waiting),
                WARM_WAIT_S,
            )
            return
        await asyncio.sleep(0.02)
