"""The schedule token: what a PingSource's sink URL carries so that the ingress runs its agent."""

from __future__ import annotations

import re

import pytest

from clrk_runtime.protocol.keys import namespace_key, schedule_token

PLATFORM = b"platform-key-for-tests"


def test_each_agent_gets_its_own_token_and_only_the_platform_key_makes_it() -> None:
    tokens = {schedule_token(PLATFORM, ns, agent) for ns in ("a", "b") for agent in ("bot", "other")}
    assert len(tokens) == 4
    assert schedule_token(PLATFORM, "a", "bot") == schedule_token(PLATFORM, "a", "bot")
    assert schedule_token(b"another-platform", "a", "bot") != schedule_token(PLATFORM, "a", "bot")
    # Whoever holds a namespace's keys (its Secret) holds none of its agents' tokens.
    namespace_keys = {namespace_key(PLATFORM, purpose, "a").decode() for purpose in ("proxy-token", "request")}
    assert not namespace_keys & {schedule_token(PLATFORM, "a", "bot")}


def test_a_token_fits_in_a_url_path_segment() -> None:
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", schedule_token(PLATFORM, "team-a", "jq-bot"))


@pytest.mark.parametrize(("namespace", "agent"), [("", "bot"), ("a", ""), ("a/b", "bot"), ("a", "b/c")])
def test_a_malformed_name_is_refused(namespace: str, agent: str) -> None:
    with pytest.raises(ValueError, match="not a namespace and an agent name"):
        schedule_token(PLATFORM, namespace, agent)


def test_an_empty_platform_key_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        schedule_token(b"", "a", "bot")
