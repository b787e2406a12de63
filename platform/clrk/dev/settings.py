"""``clrk dev``'s one settings object (``CLRK_*``), read at the edge. The ingress's, the egress
gateway's and each agent shim's settings are derived from it, never read again."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from clrk.egress.settings import CommaList
from clrk_runtime.protocol.durations import parse_duration

__all__ = ["DevSettings"]


class DevSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLRK_", extra="ignore", frozen=True)

    apply: list[str] = Field(default_factory=list)
    """Manifest files or folders to serve (``--apply``)."""
    secrets: list[str] = Field(default_factory=list)
    """``NAME=ENVVAR:KEY``: Secret NAME's KEY is the value of ENVVAR (``--secret``)."""
    host: str = "127.0.0.1"
    port: int = Field(18080, ge=0, le=65535)
    """The ingress's port; 0 picks a free one."""
    auth: Literal["auto", "open", "keys"] = "auto"
    state_dir: Path = Field(default_factory=lambda: Path.home() / ".clrk")
    """CA, budgets and logs live here."""
    sandbox: Literal["auto", "bwrap", "plain"] = "auto"
    egress_upstreams: CommaList = Field(default_factory=list)
    """Test seam, ``HOST:PORT=ADDR:PORT`` (also ``CLRK_EGRESS_UPSTREAMS``, comma-separated)."""
    egress_upstream_ca: Path | None = None
    reload_interval: float = Field(1.0, gt=0)
    """Seconds between checks of the manifests for changes."""
    agent_path: str = "/usr/local/bin:/usr/bin:/bin"
    """PATH inside sandboxes; ``clrk dev`` passes the host's, so host tools resolve."""
    async_retention: float = Field(86400.0, gt=0)
    """Seconds (or a duration: ``24h``, ``90m``) a finished async invocation's status, result and
    output are kept in the state directory (``--async-retention``, ``CLRK_ASYNC_RETENTION``)."""
    async_results_max_bytes: int = Field(256 * 1024 * 1024, gt=0)
    """The most bytes of async results kept at once; the oldest go first past it."""
    callback_attempts: int = Field(8, ge=1, le=30)
    """Tries of an async invocation's callback (``CLRK_CALLBACK_ATTEMPTS``)."""
    callback_backoff: float = Field(1.0, gt=0)
    """Seconds before a callback's first retry, doubling at each next one (``CLRK_CALLBACK_BACKOFF``)."""
    heartbeat: float = Field(15.0, gt=0)
    """Seconds of silence on an event stream (a streamed call's, an async run's events) before a
    keep-alive comment (``CLRK_HEARTBEAT``)."""

    @field_validator("async_retention", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value
