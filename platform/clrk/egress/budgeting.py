"""Budget: refuse a model call before it reaches the upstream when the agent's tokens are spent.

An addon after accounting: it reserves the call's estimate in the :class:`BudgetStore` (or
answers a 429 shaped like Anthropic's ``rate_limit_error``, with ``retry-after``), and settles the
reservation to the real usage when the response (or the error) ends: to nothing when the
request never reached the upstream (:func:`reached_upstream`), to the reservation when a response
was cut short (the upstream may have charged for it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from mitmproxy import http

from clrk.api.egress import EgressConfig
from clrk.egress.budgets import BudgetExhausted, BudgetStore, Reservation, estimate_tokens
from clrk.egress.denials import budget_exceeded
from clrk.egress.usage import CALL, ModelCall

__all__ = ["BudgetGuard", "reached_upstream", "settled_tokens"]

log = logging.getLogger(__name__)

_RESERVATION = "clrk.reservation"


def reached_upstream(flow: http.HTTPFlow) -> bool:
    """Whether the request may have reached the upstream: False when the connection to it never
    got as far as carrying a byte (refused, unresolvable, a certificate that failed verification),
    so that a call that cannot have cost anything releases its reservation."""
    if flow.response is not None:
        return True
    server = flow.server_conn
    if flow.request.scheme == "https":
        return bool(server.tls_established)
    return server.timestamp_tcp_setup is not None


def settled_tokens(call: ModelCall, reserved: int) -> int:
    """What a finished call costs: its usage when the response said it all, else (a stream cut
    short, a body we could not read) the reservation, so budgets never undercount."""
    u = call.usage
    if call.status >= 400 or u.complete or u.error_type:
        return u.total_tokens
    return max(u.total_tokens, reserved)


class BudgetGuard:
    def __init__(self, config: EgressConfig, store: BudgetStore, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self._clock = clock

    async def request(self, flow: http.HTTPFlow) -> None:
        call: ModelCall | None = flow.metadata.get(CALL)
        if call is None or flow.response is not None:
            return
        agent = self.config.agents.get(call.agent)
        if agent is None or agent.budget is None:
            return
        estimate = estimate_tokens(call.request, len(flow.request.raw_content or b""))
        try:
            reservation = await self.store.reserve(call.agent, estimate, agent.budget, self._clock())
        except BudgetExhausted as exc:
            log.warning(
                "egress 429: agent=%s invocation=%s budget of %d tokens per %gs exhausted",
                call.agent,
                call.invocation_id,
                agent.budget.tokens,
                agent.budget.window_seconds,
            )
            flow.response = budget_exceeded(call.agent, exc.retry_after_s)
            return
        flow.metadata[_RESERVATION] = reservation

    async def response(self, flow: http.HTTPFlow) -> None:
        await self._settle(flow)

    async def error(self, flow: http.HTTPFlow) -> None:
        await self._settle(flow)

    async def _settle(self, flow: http.HTTPFlow) -> None:
        reservation: Reservation | None = flow.metadata.pop(_RESERVATION, None)
        call: ModelCall | None = flow.metadata.get(CALL)
        if reservation is None or call is None:
            return
        tokens = settled_tokens(call, reservation.tokens) if reached_upstream(flow) else 0
        await self.store.settle(reservation, tokens)
