"""A warm-started agent's environment: what an invocation's has, less what only its request can
say, plus the descriptor it says it is ready on; and the settings that turn warm start on."""

from __future__ import annotations

import pytest

from clrk_runtime.invocation.environment import PER_REQUEST, PROXY_VARIABLES, READY_FD, agent_environment
from clrk_runtime.sandbox.layouts import SandboxPaths
from clrk_runtime.settings import RuntimeSettings

PATHS = SandboxPaths("/h", "/t", "/w", "/m/headers", proxy="127.0.0.1:3128")
SETTINGS = RuntimeSettings(command=["x"], agent="team/bot", agent_env={"MODEL": "m"})
TRACEPARENT = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"


def _ahead(**given: object) -> dict[str, str]:
    """What a warm start's entrypoint gets (as ``start_ahead`` asks for it)."""
    fields: dict[str, object] = {
        "invocation_id": None,
        "deadline": None,
        "traceparent": "",
        "proxy_token": "sandbox-password",
        "proxy_user": "sandbox-0123456789abcdef",
        "ready_fd": 5,
    }
    fields.update(given)
    return agent_environment(SETTINGS, PATHS, **fields)  # type: ignore[arg-type]


def _on_request() -> dict[str, str]:
    return agent_environment(
        SETTINGS, PATHS, invocation_id="inv-1", deadline=0.0, traceparent=TRACEPARENT, proxy_token="tok"
    )


def test_a_warm_start_lacks_exactly_what_only_the_request_says() -> None:
    ahead, on_request = _ahead(), _on_request()
    assert set(PER_REQUEST) == {"CLRK_METADATA_INVOCATION_ID", "CLRK_METADATA_DEADLINE", "TRACEPARENT"}
    assert set(ahead) == set(on_request) - set(PER_REQUEST) | {READY_FD}
    assert ahead[READY_FD] == "5"
    for name in ("CLRK_METADATA_AGENT", "CLRK_METADATA_NAMESPACE", "CLRK_METADATA_NAME", "HOME", "TMPDIR", "MODEL"):
        assert ahead[name] == on_request[name], name


def test_an_agent_started_on_request_has_no_ready_descriptor() -> None:
    """So that ``[ -n "${CLRK_READY_FD:-}" ] && echo ready >&"$CLRK_READY_FD"`` works in both modes."""
    env = _on_request()
    assert READY_FD not in env
    assert set(PER_REQUEST) <= set(env)


def test_a_warm_start_dials_the_proxy_as_its_sandbox() -> None:
    """Its own credentials at the identity relay, not an invocation's (there is none yet)."""
    env = _ahead()
    for name in PROXY_VARIABLES:
        assert env[name] == "http://sandbox-0123456789abcdef:sandbox-password@127.0.0.1:3128"


def test_a_proxy_user_is_quoted_in_the_url() -> None:
    env = _ahead(proxy_user="a b@c:d")
    assert env["HTTPS_PROXY"] == "http://a%20b%40c%3Ad:sandbox-password@127.0.0.1:3128"


def test_an_invocation_given_a_proxy_user_dials_as_that_user() -> None:
    """Started on request while warm start is on: the relay's credentials for its sandbox."""
    env = agent_environment(
        SETTINGS,
        PATHS,
        invocation_id="inv-1",
        deadline=0.0,
        traceparent="",
        proxy_token="sandbox-password",
        proxy_user="sandbox-0123456789abcdef",
    )
    assert env["HTTPS_PROXY"] == "http://sandbox-0123456789abcdef:sandbox-password@127.0.0.1:3128"
    assert env["CLRK_METADATA_INVOCATION_ID"] == "inv-1"


@pytest.mark.parametrize(("value", "seconds"), [("60s", 60.0), ("1m30s", 90.0), ("0.3", 0.3)])
def test_the_settings_read_warm_start_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, seconds: float
) -> None:
    monkeypatch.setenv("CLRK_WARM_START", "true")
    monkeypatch.setenv("CLRK_WARM_START_TIMEOUT", value)
    settings = RuntimeSettings(command=["x"])
    assert settings.warm_start is True
    assert settings.warm_start_timeout == seconds


def test_warm_start_is_off_and_waits_a_minute_by_default() -> None:
    settings = RuntimeSettings(command=["x"])
    assert (settings.warm_start, settings.warm_start_timeout) == (False, 60.0)
