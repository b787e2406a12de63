"""The agent's environment is an allow-list, built from scratch."""

from pathlib import Path

from clrk_runtime.invocation.environment import agent_environment
from clrk_runtime.sandbox.layouts import SandboxPaths
from clrk_runtime.settings import RuntimeSettings

PATHS = SandboxPaths("/h", "/t", "/w", "/m/headers", proxy=None)


def _env(paths: SandboxPaths = PATHS, **fields: object) -> dict[str, str]:
    settings = RuntimeSettings(command=["x"], agent="team/bot", **fields)  # type: ignore[arg-type]
    return agent_environment(
        settings,
        paths,
        invocation_id="inv-1",
        deadline=0.0,
        traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01",
        proxy_token="tok",
    )


def test_exactly_the_allowed_names_without_proxy_or_ca() -> None:
    assert set(_env()) == {
        "PATH",
        "HOME",
        "TMPDIR",
        "TRACEPARENT",
        "CLRK_METADATA_INVOCATION_ID",
        "CLRK_METADATA_AGENT",
        "CLRK_METADATA_NAMESPACE",
        "CLRK_METADATA_NAME",
        "CLRK_METADATA_DEADLINE",
        "CLRK_METADATA_RESPONSE_HEADERS",
    }
    env = _env()
    assert (env["CLRK_METADATA_NAMESPACE"], env["CLRK_METADATA_NAME"]) == ("team", "bot")
    assert env["CLRK_METADATA_DEADLINE"] == "1970-01-01T00:00:00.000Z"


def test_proxy_and_ca_variables_when_configured() -> None:
    paths = SandboxPaths("/h", "/t", "/w", "/m", proxy="127.0.0.1:3128")
    env = _env(paths, ca_bundle=Path("/ca.pem"))
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        assert env[name] == "http://inv-1:tok@127.0.0.1:3128"
    for name in ("SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        assert env[name] == "/ca.pem"
    assert env["NO_PROXY"] == env["no_proxy"] == ""


def test_manifest_env_wins_even_for_home() -> None:
    env = _env(agent_env={"HOME": "/data", "MODEL": "m"})
    assert (env["HOME"], env["MODEL"], env["TMPDIR"]) == ("/data", "m", "/t")
