"""The egress gateway: an embedded mitmproxy in the caller's asyncio loop, made of small addons.

::

    gateway = EgressGateway(settings, config, secrets)
    port = await gateway.start()        # CA (made once, or given) + bundle under <state_dir>/egress
    gateway.update_config(new_config)   # reloads: allow-lists, injections, budgets
    gateway.revoke(invocation_id)       # credentials die with the invocation
    gateway.usage.calls(invocation_id)  # model calls seen, tokens and all
    await gateway.stop()

The addon chain, in order (each one concern, in the shape of mitmproxy's own addons):
identity → allow-list → pinning → model paths → accounting → budget → tracing → injection, plus
the upstream seam, and the upstream names (:mod:`clrk.egress.pinning`) ahead of mitmproxy's TLS.
mitmproxy keeps process-wide state (``mitmproxy.ctx``), so run one gateway per process.

Nothing here blocks the event loop it shares with ``clrk dev``'s other servers: the budget store
queries off the loop (:class:`~clrk.egress.budgets.SqliteBudgets`), and :meth:`EgressGateway.stop`
waits on mitmproxy's own connection bookkeeping rather than polling it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import trace

from clrk.api.egress import EgressConfig
from clrk.egress._mitm import master, next_layer, options, proxyserver, tlsconfig
from clrk.egress.accounting import Accounting
from clrk.egress.allowlist import AllowList
from clrk.egress.budgeting import BudgetGuard
from clrk.egress.budgets import BudgetStore, SqliteBudgets
from clrk.egress.ca import CaFiles, ensure_ca, write_trust_bundle
from clrk.egress.identity import ProxyIdentity
from clrk.egress.injection import CredentialInjector
from clrk.egress.paths import ModelPaths
from clrk.egress.pinning import TunnelPinning, UpstreamNames
from clrk.egress.secrets import SecretSource
from clrk.egress.settings import EgressSettings
from clrk.egress.tracing import ModelCallTracer
from clrk.egress.upstreams import UpstreamRedirect
from clrk.egress.usage import UsageStore
from clrk.errors import EgressPolicyError

if TYPE_CHECKING:
    from clrk.egress.redis_usage import RedisUsage

__all__ = ["EgressGateway"]

log = logging.getLogger(__name__)


_CLOSE_TIMEOUT_S = 0.5
"""How long :meth:`EgressGateway.stop` lets closed connections wind down before it moves on."""


class _Ready:
    """Signals that mitmproxy's ``running`` hook has fired (servers are up, or failed)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def running(self) -> None:
        self.event.set()


class _Proxyserver(proxyserver.Proxyserver):
    """mitmproxy's proxy server addon, which also tells when its last connection has ended.

    mitmproxy's servers register every client connection with the manager for the connection's
    whole life (``register_connection``, part of the ``ServerManager`` protocol in
    ``mitmproxy.proxy.mode_servers``); :attr:`idle` is set whenever none is left, so stopping
    waits on an event instead of polling ``connections``.
    """

    name = "proxyserver"  # what mitmproxy's own code looks it up by

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # mitmproxy leaves it unannotated
        self.idle = asyncio.Event()
        self.idle.set()

    @contextlib.contextmanager
    def register_connection(self, connection_id: tuple[Any, ...] | str, handler: Any) -> Iterator[None]:
        self.idle.clear()
        try:
            with super().register_connection(connection_id, handler):
                yield
        finally:
            if not self.connections:
                self.idle.set()


class _TakesConfig(Protocol):
    """An addon that reads the :class:`EgressConfig` on every request (reloads swap it)."""

    config: EgressConfig


class EgressGateway:
    def __init__(
        self,
        settings: EgressSettings,
        config: EgressConfig,
        secrets: SecretSource,
        *,
        token_key: bytes | None = None,
        budgets: BudgetStore | None = None,
        usage: UsageStore | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``token_key`` is the platform key (proxy tokens are checked with the key derived from it
        for their namespace), by default the settings' (``CLRK_EGRESS_TOKEN_KEY[_FILE]``);
        ``budgets`` defaults to Redis when ``egress_redis_url`` is set, else SQLite under the
        state dir; with ``egress_redis_url`` each invocation's token totals also go to Redis
        (:mod:`~clrk.egress.redis_usage`), where the ingress reads an async run's usage."""
        self.settings = settings
        self.usage = usage or UsageStore()
        self._given_budgets = budgets
        self._budgets: BudgetStore | None = None
        self._redis_usage: RedisUsage | None = None
        self._unsubscribe_usage: Callable[[], None] | None = None
        self._config = config
        self._secrets = secrets
        self._key = token_key if token_key is not None else settings.token_key()
        self._tracer_provider = tracer_provider
        self._clock = clock
        self._master: master.Master | None = None
        self._proxyserver: _Proxyserver | None = None
        self._configured: tuple[_TakesConfig, ...] = ()
        self.identity = ProxyIdentity(self._key, clock=clock)
        self.ca: CaFiles | None = None
        self.port: int | None = None

    @property
    def config(self) -> EgressConfig:
        return self._config

    async def _open_budgets(self) -> BudgetStore:
        if self._given_budgets is not None:
            return self._given_budgets
        if self.settings.egress_redis_url:
            from clrk.egress.redis_budgets import RedisBudgets

            password = await asyncio.to_thread(self.settings.redis_password)
            return RedisBudgets(self.settings.egress_redis_url, password=password)
        return await SqliteBudgets.open(self.settings.egress_dir / "budgets.sqlite3")

    def _options(self, ca: CaFiles) -> options.Options:
        s = self.settings
        upstream_ca: str | None = None
        if s.egress_upstream_ca is not None:
            try:
                extra = s.egress_upstream_ca.read_bytes()
            except OSError as exc:
                reason = f"--egress-upstream-ca {s.egress_upstream_ca}: {exc.strerror}"
                raise EgressPolicyError(reason) from None
            upstream_ca = str(write_trust_bundle(s.egress_dir / "upstream-trust.pem", extra))
        return options.Options(
            listen_host=s.egress_listen_host,
            listen_port=s.egress_listen_port,
            confdir=str(ca.confdir),
            mode=["regular"],
            upstream_cert=False,
            ssl_insecure=False,
            ssl_verify_upstream_trusted_ca=upstream_ca,
        )

    async def start(self) -> int:
        """Create the CA and bundle if needed, listen, and return the bound port."""
        if self._master is not None:
            raise EgressPolicyError("the egress gateway is already running")
        upstreams = self.settings.upstreams()
        self.ca = ensure_ca(self.settings.egress_dir)
        opts = self._options(self.ca)  # before opening anything: it may refuse the settings
        budgets = self._budgets = await self._open_budgets()
        if self.settings.egress_redis_url:
            from clrk.egress.redis_usage import RedisUsage

            password = await asyncio.to_thread(self.settings.redis_password)
            self._redis_usage = RedisUsage(self.settings.egress_redis_url, password=password)
            self._unsubscribe_usage = self.usage.subscribe(self._redis_usage.record)
        ready = _Ready()
        m = master.Master(opts, event_loop=asyncio.get_running_loop())
        # Master puts a handler on the root logger that turns every log record of the process
        # into a deprecated mitmproxy event; none of our addons listen, and clrk dev shares the
        # process with other servers, so take it off again.
        legacy: Any = getattr(m, "_legacy_log_events", None)
        if legacy is not None:
            legacy.uninstall()
        allow = AllowList(self._config, dialled=upstreams.keys())
        guard = BudgetGuard(self._config, budgets, clock=self._clock)
        injector = CredentialInjector(self._config, self._secrets)
        paths = ModelPaths(self._config)
        self._configured = (allow, paths, guard, injector)
        chain = (
            UpstreamRedirect(upstreams),
            self.identity,
            allow,
            TunnelPinning(),
            paths,
            Accounting(self.usage, clock=self._clock),
            guard,
            ModelCallTracer(self._tracer_provider),
            injector,
        )
        manager: Any = m.addons
        ps = self._proxyserver = _Proxyserver()
        # UpstreamNames before TlsConfig: the upstream's SNI is set before TlsConfig reads it.
        manager.add(ps, next_layer.NextLayer(), UpstreamNames(), tlsconfig.TlsConfig(), ready, *chain)
        # Options of addons exist only once the addons are loaded. Lazy: nothing reaches an
        # upstream before the request hooks (allow-list, budget) have passed it.
        loaded: Any = m.options
        loaded.update(connection_strategy="lazy")
        self._master = m
        listening = await ps.setup_servers()
        await m.running()
        await ready.event.wait()
        addrs = ps.listen_addrs()
        if not listening or not addrs:
            await self.stop()
            raise EgressPolicyError(
                f"cannot listen on {self.settings.egress_listen_host}:{self.settings.egress_listen_port}"
            )
        self.port = int(addrs[0][1])
        log.info("egress gateway listening on %s:%d", self.settings.egress_listen_host, self.port)
        return self.port

    async def stop(self) -> None:
        """Stop listening, close open connections, close the budget store we opened."""
        m, self._master = self._master, None
        ps, self._proxyserver = self._proxyserver, None
        if m is None or ps is None:
            return
        await ps.servers.update([])
        for handler in list(ps.connections.values()):
            for conn in list(handler.transports):
                with contextlib.suppress(Exception):
                    handler.close_connection(conn)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await ps.idle.wait()
        await m.done()
        if self._budgets is not None and self._given_budgets is None:
            await self._budgets.close()
        self._budgets = None
        if self._unsubscribe_usage is not None:
            self._unsubscribe_usage()
            self._unsubscribe_usage = None
        if self._redis_usage is not None:
            await self._redis_usage.close()
            self._redis_usage = None
        self.port = None

    def update_config(self, config: EgressConfig) -> None:
        """Apply a new configuration to every later request (open tunnels included)."""
        self._config = config
        for addon in self._configured:
            addon.config = config

    def revoke(self, invocation_id: str, expires_at: float | None = None) -> None:
        """End an invocation's proxy credentials now (its open tunnels included); ``expires_at``,
        its token's expiry when known, bounds how long the gateway remembers it."""
        self.identity.revoke(invocation_id, expires_at)

    def proxy_url(self, invocation_id: str, token: str, host: str = "127.0.0.1") -> str:
        """``http://<invocation>:<token>@host:port`` for the agent's HTTPS_PROXY."""
        if self.port is None:
            raise EgressPolicyError("the egress gateway is not running")
        return f"http://{invocation_id}:{token}@{host}:{self.port}"
