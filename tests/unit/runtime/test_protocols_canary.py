"""A canary for the uvicorn and h11 internals that ``clrk_runtime/server/protocols.py`` builds on.

That module subclasses uvicorn's HTTP protocol classes and reads h11's connection state (the only
way to give every clrk server JSON refusals and a deadline for request heads). Those are not
public APIs: runtime/pyproject.toml pins the minor versions they were written against, and this
test says exactly what moved when an upgrade changes them, before any behaviour test fails in a
way that is hard to read.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import re
import tomllib
from pathlib import Path

import h11
import pytest
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

RUNTIME = Path(__file__).resolve().parents[3] / "runtime" / "pyproject.toml"


def _pins() -> dict[str, str]:
    """``name -> specifier`` of the runtime's own dependency list."""
    dependencies = tomllib.loads(RUNTIME.read_text())["project"]["dependencies"]
    pins = {}
    for line in dependencies:
        name, spec = re.match(r"([A-Za-z0-9_.-]+)(.*)", line).groups()  # type: ignore[union-attr]
        pins[name.lower()] = spec
    return pins


@pytest.mark.parametrize("name", ["uvicorn", "h11"])
def test_the_installed_version_is_the_pinned_minor(name: str) -> None:
    spec = _pins()[name]
    low = re.search(r">=(\d+)\.(\d+)", spec)
    high = re.search(r"<(\d+)\.(\d+)", spec)
    assert low and high, f"runtime/pyproject.toml must pin {name} to one minor version, found {spec!r}"
    installed = tuple(int(part) for part in importlib.metadata.version(name).split(".")[:2])
    assert (int(low[1]), int(low[2])) <= installed < (int(high[1]), int(high[2])), (
        f"{name} {importlib.metadata.version(name)} is installed but server/protocols.py was written "
        f"against {spec}: re-read it against the new version, then move the pin"
    )


@pytest.mark.parametrize(
    ("cls", "methods"),
    [
        (
            H11Protocol,
            ["connection_made", "data_received", "connection_lost", "send_400_response", "on_response_complete"],
        ),
        (
            HttpToolsProtocol,
            [
                "connection_made",
                "data_received",
                "connection_lost",
                "send_400_response",
                "on_response_complete",
                "on_message_begin",
                "on_headers_complete",
                "on_message_complete",
            ],
        ),
    ],
)
def test_the_overridden_protocol_hooks_still_exist(cls: type, methods: list[str]) -> None:
    missing = [name for name in methods if not callable(getattr(cls, name, None))]
    assert not missing, f"uvicorn's {cls.__name__} no longer has {missing}: server/protocols.py overrides them"


@pytest.mark.parametrize(
    ("cls", "attributes"),
    [
        (H11Protocol, ["conn", "cycle", "timeout_keep_alive_task", "server_state", "transport", "logger"]),
        (HttpToolsProtocol, ["cycle", "pipeline", "flow", "timeout_keep_alive_task", "server_state", "config"]),
    ],
)
def test_the_state_read_is_still_set_up_by_the_protocols(cls: type, attributes: list[str]) -> None:
    source = inspect.getsource(cls)
    missing = [name for name in attributes if f"self.{name}" not in source]
    assert not missing, f"uvicorn's {cls.__name__} no longer keeps {missing}: server/protocols.py reads them"


def test_the_h11_state_read_is_still_there() -> None:
    for state in ("IDLE", "SEND_RESPONSE", "SEND_BODY", "DONE"):
        assert hasattr(h11, state), f"h11.{state} is gone: server/protocols.py compares connection states"
    connection = h11.Connection(h11.SERVER)
    assert isinstance(connection.trailing_data, tuple), "h11's Connection.trailing_data changed shape"
    assert connection.our_state is h11.IDLE and connection.their_state is h11.IDLE
    assert isinstance(DEFAULT_MAX_INCOMPLETE_EVENT_SIZE, int)
    assert "h11_max_incomplete_event_size" in inspect.signature(Config).parameters
