"""Flags and CLRK_* variables become one settings object."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from clrk_runtime.server.main import build_settings
from clrk_runtime.settings import RuntimeSettings


def test_flags_map_to_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLRK_AGENT_ENV", '{"A": "1", "B": "2"}')
    monkeypatch.setenv("CLRK_QUEUE_SIZE", "5")
    settings = build_settings(
        "--port 9000 --timeout 30s --warm-pool 2 --max-concurrency 4 --sandbox plain "  # noqa: SIM905
        "--env B=3 --env C=x=y --bind /src:/app -- ./agent.sh --flag".split()
    )
    assert settings.port == 9000
    assert settings.timeout == 30
    assert (settings.warm_pool, settings.max_concurrency, settings.queue_size) == (2, 4, 5)
    assert settings.sandbox == "plain"
    assert settings.agent_env == {"A": "1", "B": "3", "C": "x=y"}
    assert settings.binds == ["/src:/app"]
    assert settings.command == ["./agent.sh", "--flag"]


def test_warm_start_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLRK_WARM_START", raising=False)
    assert build_settings(["--", "./agent.sh"]).warm_start is False
    started = build_settings(["--warm-pool", "1", "--warm-start", "--warm-start-timeout", "1m30s", "--", "./agent.sh"])
    assert (started.warm_start, started.warm_start_timeout) == (True, 90)
    monkeypatch.setenv("CLRK_WARM_START", "true")
    assert build_settings(["--", "./agent.sh"]).warm_start is True
    with pytest.raises(ValidationError, match="not a duration: 'soon'"):
        build_settings(["--warm-start-timeout", "soon", "--", "./agent.sh"])


def test_knative_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "7777")
    assert RuntimeSettings().port == 7777


def test_token_key_from_file(tmp_path: object) -> None:
    from pathlib import Path

    key_file = Path(str(tmp_path)) / "key"
    key_file.write_text("s3cret\n")
    assert RuntimeSettings(egress_token_key_file=key_file).token_key() == b"s3cret"


def test_head_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RuntimeSettings().head_timeout_seconds == 10
    monkeypatch.setenv("CLRK_HEAD_TIMEOUT_SECONDS", "2.5")
    assert RuntimeSettings().head_timeout_seconds == 2.5
    with pytest.raises(ValueError, match="greater than 0"):
        RuntimeSettings(head_timeout_seconds=0)


@pytest.mark.parametrize("value", ["0s", "3601s", "1h1s", -1])
def test_a_timeout_outside_what_a_taskagent_allows_is_refused(value: object) -> None:
    with pytest.raises(ValidationError, match="timeout must be more than 0s and at most 3600s"):
        RuntimeSettings(timeout=value)


def test_keep_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RuntimeSettings().keep_alive_seconds == 120, "longer than Knative's queue-proxy keeps them (90 s)"
    monkeypatch.setenv("CLRK_KEEP_ALIVE_SECONDS", "7")
    assert RuntimeSettings().keep_alive_seconds == 7
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        RuntimeSettings(keep_alive_seconds=0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/opt/clrk/python/bin/python3", ["/opt/clrk/python/bin/python3"]),
        ("/opt/clrk/bin/clrk-shim --python", ["/opt/clrk/bin/clrk-shim", "--python"]),
        ("'/opt/my tools/py' -X dev", ["/opt/my tools/py", "-X", "dev"]),
        ('["/opt/my tools/py", "--python"]', ["/opt/my tools/py", "--python"]),
    ],
)
def test_python_is_a_path_a_command_line_or_a_json_list(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("CLRK_PYTHON", value)
    assert RuntimeSettings().python == expected


def test_python_defaults_to_this_interpreter() -> None:
    import sys

    assert RuntimeSettings().python == [sys.executable]
    with pytest.raises(ValidationError, match="at least 1 item"):
        RuntimeSettings(python="")


def test_a_token_key_file_that_cannot_be_read_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"CLRK_EGRESS_TOKEN_KEY_FILE\): cannot read .*missing"):
        RuntimeSettings(egress_token_key_file=tmp_path / "missing").token_key()
