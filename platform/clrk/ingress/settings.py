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
    async_retention_seconds: float = Field(86400.0, gt=0)
    """How long a finished async invocation, its result and its output are kept (``Prefer:
    respond-async``); then ``GET /invocations/<id>/result`` answers 410."""
    async_results_max_bytes: int = Field(256 * 1024 * 1024, gt=0)
    """The most bytes of async results kept at once; past it the oldest results are dropped
    first (their runs answer 410 ``result_expired``)."""
    callback_attempts: int = Field(8, ge=1, le=30)
    """Tries of an async invocation's callback before it is recorded as not delivered."""
    callback_backoff_seconds: float = Field(1.0, gt=0)
    """Wait before the first retry of a callback; each next one waits twice as long."""
    callback_timeout_seconds: float = Field(10.0, gt=0)
    """Longest wait for a callback receiver's answer, per try."""
    heartbeat_seconds: float = Field(15.0, gt=0)
    """Seconds of silence on an event stream before a ``: keep-alive`` comment (proxies cut idle
    streams, commonly at 30 to 60 s)."""
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

    # -- async invocations in a cluster (`clrk ingress`; clrk dev keeps runs under its state dir) --
    broker_url: str | None = None
    """Where accepted async invocations are posted: Knative Eventing's broker-ingress URL of the
    Broker ``clrk/clrk-invocations``. With :attr:`redis_url`, ``clrk ingress`` takes ``Prefer:
    respond-async``; without either it answers such requests synchronously."""
    redis_url: str | None = None
    """Redis holding async runs (``redis://host:port/db``; no password here: see
    :attr:`redis_password_file`)."""
    redis_password_file: Path | None = None
    """File holding Redis's password (in a cluster, Secret ``clrk-redis`` mounted), read once at start."""
    run_lease_seconds: float = Field(15.0, gt=0)
    """How long a replica's hold on a run it runs lasts without renewal (it renews it every third
    of that): how soon after a replica dies another may run its runs again."""

    def redis_password(self) -> str | None:
        """Redis's password from :attr:`redis_password_file` (read here); ValueError when empty."""
        if self.redis_password_file is None:
            return None
        password = self.redis_password_file.read_text(encoding="utf-8").strip()
        if not password:
            raise ValueError(
                f"redis_password_file (CLRK_INGRESS_REDIS_PASSWORD_FILE): {self.redis_password_file} is empty"
            )
        return password
