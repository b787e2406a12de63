"""``clrk dev``'s one settings object (``CLRK_*``), read at the edge. The ingress's, the egress
gateway's and each agent shim's settings are derived from it, never read again."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from clrk.egress.settings import CommaList

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
