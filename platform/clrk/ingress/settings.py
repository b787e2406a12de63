"""The ingress's settings (``CLRK_INGRESS_*``), read once at the edge."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["IngressSettings", "is_loopback"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class IngressSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLRK_INGRESS_", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(18080, ge=0, le=65535)
    max_body_bytes: int = Field(1024 * 1024, gt=0)
    """Largest request body accepted (bytes); larger gets 413."""
    body_timeout_seconds: float = Field(30.0, gt=0)
    """Longest wait for the whole request body; a body still arriving after it gets 408."""
    head_timeout_seconds: float = Field(10.0, gt=0)
    """Longest wait for a request head (from the connection opening, or the previous answer on
    it); a head still incomplete after it gets 408, a connection with nothing sent is closed."""
    auth: Literal["auto", "open", "keys"] = "auto"
    """``open`` lets anyone call any agent; ``keys`` requires a Caller's bearer key; ``auto`` is
    open only when listening on loopback."""
    grace_seconds: float = Field(2.0, ge=0)
    """Extra wait past an agent's deadline for the shim's own 504 before the ingress gives one."""
    platform_key_file: Path | None = Field(
        None, validation_alias=AliasChoices("platform_key_file", "CLRK_PLATFORM_KEY_FILE")
    )
    """File holding the platform key (``CLRK_PLATFORM_KEY_FILE``; in a cluster, the platform's
    Secret mounted into the ingress), read once at start: the ingress signs each request it forwards with
    the agent namespace's ``request`` key derived from it. Without it requests go unsigned, and
    shims given a request key refuse them (401)."""

    def platform_key(self) -> bytes | None:
        """The platform key from :attr:`platform_key_file` (the file is read here); ValueError
        when the file is empty."""
        if self.platform_key_file is None:
            return None
        key = self.platform_key_file.read_bytes().strip()
        if not key:
            raise ValueError(f"platform_key_file (CLRK_PLATFORM_KEY_FILE): {self.platform_key_file} is empty")
        return key

    @property
    def open_mode(self) -> bool:
        return self.auth == "open" or (self.auth == "auto" and is_loopback(self.host))
