"""Revoked proxy tokens: refused until their expiry, then forgotten; the store stays bounded."""

from __future__ import annotations

import base64
import random
from datetime import timedelta

import pytest

from clrk.api.taskagent import MAX_TIMEOUT
from clrk.egress.identity import CLOCK_SLACK_S, MAX_TOKEN_LIFETIME_S, ProxyIdentity
from clrk.egress.revocations import Revocations
from clrk_runtime.protocol.keys import namespace_key
from clrk_runtime.protocol.tokens import InvalidToken, ProxyClaims, sign

KEY = b"test-key"
START = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def header(invocation_id: str, expires_at: float) -> str:
    token = sign(ProxyClaims(invocation_id, "default/agent", expires_at), namespace_key(KEY, "proxy-token", "default"))
    return "Basic " + base64.b64encode(f"{invocation_id}:{token}".encode()).decode()


def refusal(identity: ProxyIdentity, value: str) -> str | None:
    try:
        identity.authenticate(value)
    except InvalidToken as exc:
        return str(exc)
    return None


def test_the_default_horizon_covers_the_longest_token() -> None:
    from clrk_runtime.service.handling import TOKEN_GRACE

    assert timedelta(seconds=MAX_TOKEN_LIFETIME_S) >= MAX_TIMEOUT + timedelta(seconds=TOKEN_GRACE)


@pytest.mark.parametrize("explicit", [True, False], ids=["expiry-given", "default-horizon"])
def test_a_revoked_token_is_refused_until_its_expiry_then_forgotten(explicit: bool) -> None:
    clock = Clock()
    identity = ProxyIdentity(KEY, clock=clock)
    expires_at = START + MAX_TOKEN_LIFETIME_S  # the longest timeout (an async run's), plus the shim's grace
    value = header("inv-1", expires_at)
    assert refusal(identity, value) is None

    identity.revoke("inv-1", expires_at if explicit else None)
    for clock.now in (START, START + 1, expires_at - 0.001):
        assert refusal(identity, value) == "invocation ended"
    for clock.now in (expires_at, expires_at + CLOCK_SLACK_S - 1):
        assert refusal(identity, value) == "expired"
        assert len(identity.revocations) == 1  # kept through the slack
    clock.now = expires_at + CLOCK_SLACK_S
    assert not identity.is_revoked("inv-1")  # forgotten (a lookup drops what has expired) …
    assert len(identity.revocations) == 0
    assert refusal(identity, value) == "expired"  # … and still refused


def test_other_tokens_still_pass() -> None:
    clock = Clock()
    identity = ProxyIdentity(KEY, clock=clock)
    identity.revoke("inv-1")
    assert identity.authenticate(header("inv-2", START + 100)).invocation_id == "inv-2"


def test_entries_are_forgotten_after_their_expiry() -> None:
    clock = Clock()
    identity = ProxyIdentity(KEY, clock=clock, clock_slack_s=0)
    for i in range(10):
        identity.revoke(f"inv-{i}", START + 10 * (i + 1))
    assert len(identity.revocations) == 10
    clock.now = START + 35
    assert not identity.is_revoked("inv-0")  # a lookup forgets what has expired too
    assert len(identity.revocations) == 7
    assert identity.is_revoked("inv-3")
    clock.now = START + 100
    identity.revoke("inv-late")  # default horizon: now + MAX_TOKEN_LIFETIME_S
    assert len(identity.revocations) == 1
    clock.now = START + 100 + MAX_TOKEN_LIFETIME_S
    assert not identity.is_revoked("inv-late")
    assert len(identity.revocations) == 0
    assert identity.revocations.entries == 0


def test_an_expiry_already_passed_is_not_kept() -> None:
    revocations = Revocations()
    revocations.add("inv-1", START - 1, now=START)
    assert "inv-1" not in revocations
    assert len(revocations) == 0


def test_revoking_again_keeps_the_later_expiry() -> None:
    revocations = Revocations()
    revocations.add("inv-1", START + 10, now=START)
    revocations.add("inv-1", START + 5, now=START)  # shorter: ignored
    revocations.add("inv-1", START + 20, now=START)  # longer: wins, the first entry goes stale
    revocations.forget_expired(START + 15)
    assert "inv-1" in revocations
    assert revocations.entries == 1
    revocations.forget_expired(START + 20)
    assert "inv-1" not in revocations
    assert revocations.entries == 0


def test_out_of_order_expiries_are_each_dropped_at_their_time() -> None:
    revocations = Revocations()
    for i, offset in enumerate([50, 10, 40, 20, 30]):
        revocations.add(f"inv-{i}", START + offset, now=START)
    for t, left in [(9, 5), (10, 4), (25, 3), (39, 2), (40, 1), (50, 0)]:
        revocations.forget_expired(START + t)
        assert len(revocations) == revocations.entries == left


def test_revoking_100000_ids_keeps_only_the_unexpired() -> None:
    clock = Clock()
    identity = ProxyIdentity(KEY, clock=clock)
    step = 0.05  # 20 revokes a second, for 5000 s: longer than the horizon (an hour and a bit)
    horizon = MAX_TOKEN_LIFETIME_S + CLOCK_SLACK_S
    live = round(horizon / step)
    for i in range(100_000):
        clock.now = START + i * step
        identity.revoke(f"inv-{i}")
        kept = min(i + 1, live)
        assert kept - 1 <= len(identity.revocations) <= kept + 1  # float rounding at the edge
        assert identity.revocations.entries == len(identity.revocations)
    assert identity.is_revoked("inv-99999")
    assert identity.is_revoked(f"inv-{100_000 - live + 10}")
    assert not identity.is_revoked(f"inv-{100_000 - live - 10}")
    clock.now += horizon
    identity.revoke("inv-last")
    assert len(identity.revocations) == 1


def test_jittered_expiries_stay_bounded_by_the_unexpired() -> None:
    rng = random.Random(7)
    revocations = Revocations()
    expiries: dict[str, float] = {}
    for i in range(100_000):
        now = START + i * 0.01
        expires_at = now + rng.uniform(0, MAX_TOKEN_LIFETIME_S)
        revocations.add(f"inv-{i}", expires_at, now=now)
        expiries[f"inv-{i}"] = expires_at
        if i % 10_000 == 9_999:
            unexpired = {k for k, e in expiries.items() if e > now}
            assert len(revocations) == revocations.entries == len(unexpired)
            assert all(k in revocations for k in unexpired)
