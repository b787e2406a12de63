"""Warm start's bookkeeping for one pool: start each warm sandbox's agent ahead, count what fails.

With ``warm_start`` on, the pool hands every warm sandbox it makes to :meth:`WarmStarts.start`,
which launches its agent (:func:`~clrk_runtime.invocation.starting.start_ahead`) under proxy
credentials of the sandbox's own at the identity relay: until its request binds them to the
invocation (:meth:`WarmStarts.claim`), its egress goes out under a *start-up id*, a fresh
UUIDv7 logged with the start-up, so that whatever the agent calls before its request is
attributed to the agent, counted and budgeted at the gateway, and never to a later invocation.

An agent that exits or hangs before it is ready, or dies while it waits, is logged (the agent's
name, exit code, stderr) and replaced by the pool. After :data:`FALLBACK_AFTER` such failures in a
row, warm start stops for this shim: the pool makes sandboxes that start their agent on request
again (callers are served, only slower) and the state turns ``failing``. Each change of state is
logged once as one machine-readable line, :data:`WARM_START_PREFIX` then compact JSON
(``clrk-warm-start {"agent":"ns/name","state":"failing","failures":3,"reason":"…"}``), which the
cluster operator reads from the pod's log into the TaskAgent's ``WarmStarted`` condition.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Literal

from clrk_runtime.invocation.starting import StartFailed, start_ahead
from clrk_runtime.protocol.ids import new_invocation_id
from clrk_runtime.protocol.tokens import ProxyClaims, sign
from clrk_runtime.sandbox.identities import Identity, IdentityRelay
from clrk_runtime.sandbox.sandboxes import Sandbox
from clrk_runtime.settings import RuntimeSettings

__all__ = ["FALLBACK_AFTER", "STARTUP_TOKEN_S", "WARM_START_PREFIX", "WarmStartStats", "WarmStarts"]

_log = logging.getLogger(__name__)
FALLBACK_AFTER = 3
"""Failures in a row after which a shim stops warm-starting (until it restarts)."""
STARTUP_TOKEN_S = 300.0
"""Seconds a start-up's proxy token lives from the connection it was signed for (a connection
opened before the request is closed when the request comes anyway)."""
WARM_START_PREFIX = "clrk-warm-start "
"""What starts the line logged at each change of state (then JSON, to the end of the line)."""

type WarmStartState = Literal["off", "on", "failing"]


@dataclass(frozen=True, slots=True)
class WarmStartStats:
    """A live snapshot (see :attr:`PoolStats.warm_start <clrk_runtime.service.pool.PoolStats>`)."""

    state: WarmStartState
    """``off``: not asked for; ``on``: warm sandboxes start their agent ahead; ``failing``: it kept
    failing, so they start it on request again."""
    starting: int
    """Sandboxes whose agent is starting, not yet ready."""
    failures: int
    """Failures in a row (0 once a warm-started sandbox was handed its request)."""
    reason: str
    """The last failure, one line ("" if none)."""


class WarmStarts:
    def __init__(self, settings: RuntimeSettings, *, token_key: bytes | None, relay: IdentityRelay | None) -> None:
        self.settings = settings
        self._token_key = token_key
        self._relay = relay
        self._failing = False
        self._failures = 0
        self._reason = ""
        self._starting = 0
        if settings.warm_start:
            self._report()

    @property
    def active(self) -> bool:
        """Whether the next warm sandbox should start its agent ahead."""
        return self.settings.warm_start and not self._failing

    @property
    def stats(self) -> WarmStartStats:
        return WarmStartStats(self._state, self._starting, self._failures, self._reason)

    @property
    def _state(self) -> WarmStartState:
        if not self.settings.warm_start:
            return "off"
        return "failing" if self._failing else "on"

    async def start(self, sandbox: Sandbox) -> bool:
        """Start ``sandbox``'s agent ahead; True once it is ready, False when it failed (logged,
        counted: the caller closes the sandbox and makes another)."""
        startup_id = new_invocation_id()
        began = time.monotonic()
        proxy = None
        if self._relay is not None:
            proxy = sandbox.credentials = self._relay.enrol(self._startup_identity(startup_id))
        self._starting += 1
        try:
            await start_ahead(sandbox, self.settings, startup_id=startup_id, proxy=proxy)
        except StartFailed as failed:
            self.failed(failed.reason)
            return False
        finally:
            self._starting -= 1
        took = time.monotonic() - began
        _log.info("%s: warm sandbox ready in %.2fs (start-up %s)", self.settings.agent, took, startup_id)
        return True

    def claim(self, sandbox: Sandbox, invocation_id: str, token: str | None) -> None:
        """``sandbox`` serves invocation ``invocation_id`` now: its egress goes out as that
        invocation's (its connections from before are closed)."""
        self._failures = 0  # a warm start that served: "in a row" starts again
        if self._relay is not None and sandbox.credentials is not None:
            self._relay.bind(sandbox.credentials[0], _fixed(invocation_id, token))

    def enrol(self, sandbox: Sandbox, invocation_id: str, token: str | None) -> tuple[str, str] | None:
        """Credentials at the relay for a sandbox started on request (None without a relay)."""
        if self._relay is None:
            return None
        sandbox.credentials = self._relay.enrol(_fixed(invocation_id, token))
        return sandbox.credentials

    def failed(self, reason: str) -> None:
        """A warm-started agent failed (before it was ready, or while it waited): log and count
        it, and fall back to starting on request once it keeps failing."""
        self._failures += 1
        self._reason = reason
        agent = self.settings.agent
        if self._failing:
            _log.warning("%s: warm start failed: %s", agent, reason)
            return
        if self._failures < FALLBACK_AFTER:
            _log.warning("%s: warm start failed (%d in a row): %s; replacing it", agent, self._failures, reason)
            return
        self._failing = True
        _log.error(
            "%s: warm start failed %d times in a row (last: %s); its sandboxes start the agent on request from now on"
            " (restart the shim to try again)",
            agent,
            self._failures,
            reason,
        )
        self._report()

    def _report(self) -> None:
        details = {
            "agent": self.settings.agent,
            "state": self._state,
            "failures": self._failures,
            "reason": self._reason,
        }
        _log.info("%s%s", WARM_START_PREFIX, json.dumps(details, separators=(",", ":")))

    def _startup_identity(self, startup_id: str) -> Identity:
        key = self._token_key
        agent = self.settings.agent

        def identity() -> tuple[str, str | None]:
            if key is None:
                return startup_id, None
            return startup_id, sign(ProxyClaims(startup_id, agent, time.time() + STARTUP_TOKEN_S), key)

        return identity


def _fixed(name: str, token: str | None) -> Identity:
    def identity() -> tuple[str, str | None]:
        return name, token

    return identity
