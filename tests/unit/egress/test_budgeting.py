"""Budget addon, no sockets: a 429 like Anthropic's once an agent's tokens are spent."""

from __future__ import annotations

import json
from pathlib import Path

from mitmproxy import http

from clrk.egress.budgeting import BudgetGuard
from clrk.egress.budgets import SqliteBudgets
from tests.support.addons import addon_context, json_response, messages_flow, play, with_call
from tests.support.egress import AGENT, make_config

NOW = 1_000_000.0
BODY = {"model": "claude-test", "max_tokens": 100, "messages": []}


async def model_call(tctx: object, tokens_used: int, invocation_id: str = "inv-1") -> http.HTTPFlow:
    """One call through the guard: refused at ``request``, or answered and settled to its usage."""
    flow = messages_flow(BODY)
    call = with_call(flow, invocation_id)
    await play(tctx, "request", flow)
    if flow.response is None:  # reserved: the upstream answers
        flow.response = json_response(200, {"type": "message"})
        call.status = 200
        call.usage.output_tokens = tokens_used
        call.usage.complete = True
    else:
        call.status = flow.response.status_code
    await play(tctx, "response", flow)
    return flow


async def test_calls_pass_until_the_budget_is_spent_then_get_a_429(tmp_path: Path) -> None:
    store = await SqliteBudgets.open(tmp_path / "budgets.sqlite3")
    try:
        async with addon_context(BudgetGuard(make_config(budget_tokens=400), store, clock=lambda: NOW)) as tctx:
            first = await model_call(tctx, tokens_used=150)
            second = await model_call(tctx, tokens_used=150)
            refused = await model_call(tctx, tokens_used=0, invocation_id="inv-2")
        window = make_config(budget_tokens=400).agents[AGENT].budget
        assert window is not None
        assert await store.used(AGENT, window, NOW) == 300  # settled to the real usage
    finally:
        await store.close()
    assert first.response is not None and first.response.status_code == 200
    assert second.response is not None and second.response.status_code == 200
    assert refused.response is not None and refused.response.status_code == 429
    body = json.loads(refused.response.content or b"")
    assert body["type"] == "error"
    assert body["error"]["type"] == "rate_limit_error"
    assert f"agent {AGENT} exhausted" in body["error"]["message"]
    assert int(refused.response.headers["retry-after"]) > 60
    assert refused.response.headers["x-should-retry"] == "false"  # an hour's wait: fail now


async def test_settling_to_real_usage_lets_more_calls_through_than_the_estimates(tmp_path: Path) -> None:
    store = await SqliteBudgets.open(tmp_path / "budgets.sqlite3")
    try:
        async with addon_context(BudgetGuard(make_config(budget_tokens=400), store, clock=lambda: NOW)) as tctx:
            flows = [await model_call(tctx, tokens_used=10) for _ in range(10)]
    finally:
        await store.close()
    # each reserves ~120 (max_tokens + body/4): without settling, only three would fit
    assert all(f.response is not None and f.response.status_code == 200 for f in flows)


async def test_agents_without_a_budget_are_not_counted(tmp_path: Path) -> None:
    store = await SqliteBudgets.open(tmp_path / "budgets.sqlite3")
    try:
        async with addon_context(BudgetGuard(make_config(), store, clock=lambda: NOW)) as tctx:
            flows = [await model_call(tctx, tokens_used=10**6) for _ in range(3)]
    finally:
        await store.close()
    assert all(f.response is not None and f.response.status_code == 200 for f in flows)
