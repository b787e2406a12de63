"""The egress gateway's settings: one object, read at the edge (``clrk egress``, ``clrk dev``).

Every field is also read from the environment with the ``CLRK_`` prefix (``CLRK_EGRESS_UPSTREAMS``,
``CLRK_STATE_DIR`` …); list fields take comma-separated values. The core receives the built
object and never reads ``os.environ`` itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from clrk.errors import EgressPolicyError

__all__ = ["CommaList", "EgressSettings", "Upstreams", "parse_hostport", "parse_upstreams"]

Address = tuple[str, int]
Upstreams = dict[Address, Address]
"""``(host, port)`` the agent asked for → ``(address, port)`` actually dialled."""


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]
"""A list setting that the environment gives comma-separated (``CLRK_EGRESS_UPSTREAMS=a,b``)."""


class EgressSettings(BaseSettings):
    """Where the gateway listens, keeps its state, and how it reaches upstreams."""

    model_config = SettingsConfigDict(env_prefix="CLRK_", extra="ignore")

    state_dir: Path = Field(default_factory=lambda: Path.home() / ".clrk")
    """Root of clrk's state; the gateway uses ``<state_dir>/egress`` (CA, bundle, budgets)."""
    egress_listen_host: str = "127.0.0.1"
    egress_listen_port: int = Field(default=8899, ge=0, le=65535)
    """0 picks a free port (tests); :meth:`EgressGateway.start` returns the bound one."""
    egress_config_file: Path | None = None
    """JSON :class:`~clrk.api.egress.EgressConfig` for standalone ``clrk egress``."""
    egress_token_key: SecretStr | None = None
    """The platform key (or ``egress_token_key_file``). Shims never hold it: each signs proxy
    tokens with its namespace's key derived from it (``namespace_key(key, "proxy-token", ns)``),
    and the gateway checks each token with the key of the namespace the token names."""
    egress_token_key_file: Path | None = None
    egress_secrets_dir: Path | None = None
    """Cluster mode: mounted Secrets as ``<dir>/<secret name>/<key>`` files."""
    egress_redis_url: str | None = None
    """Keep budget counters in Redis (several replicas) instead of SQLite under the state dir,
    and each invocation's token totals there for the ingress."""
    egress_redis_password_file: Path | None = None
    """File holding Redis's password (in a cluster, Secret ``clrk-redis`` mounted), read at start."""
    egress_upstreams: CommaList = []
    """Test seam, ``HOST:PORT=ADDR:PORT``: dial ADDR:PORT for HOST:PORT, TLS still verified
    against HOST."""
    egress_upstream_ca: Path | None = None
    """A PEM CA trusted for upstream verification, in addition to the system's."""
    egress_connect_timeout_s: float = Field(default=10.0, gt=0)

    def redis_password(self) -> str | None:
        """Redis's password from :attr:`egress_redis_password_file` (read here); ValueError naming
        the setting when the file is empty or cannot be read."""
        path = self.egress_redis_password_file
        if path is None:
            return None
        try:
            password = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"egress_redis_password_file: cannot read {path}: {exc.strerror}") from None
        if not password:
            raise ValueError(f"egress_redis_password_file (CLRK_EGRESS_REDIS_PASSWORD_FILE): {path} is empty")
        return password

    @property
    def egress_dir(self) -> Path:
        return self.state_dir / "egress"

    def upstreams(self) -> Upstreams:
        return parse_upstreams(self.egress_upstreams)

    def token_key(self) -> bytes:
        """The platform key proxy-token keys are derived from; read here, at the edge."""
        if self.egress_token_key is not None:
            key = self.egress_token_key.get_secret_value().encode().strip()
        elif self.egress_token_key_file is not None:
            try:
                key = self.egress_token_key_file.read_bytes().strip()
            except OSError as exc:
                raise EgressPolicyError(
                    f"cannot read the token key file {self.egress_token_key_file}: {exc.strerror}"
                ) from None
        else:
            raise EgressPolicyError("no proxy token key: set CLRK_EGRESS_TOKEN_KEY or CLRK_EGRESS_TOKEN_KEY_FILE")
        if not key:
            raise EgressPolicyError("the proxy token key is empty: CLRK_EGRESS_TOKEN_KEY or CLRK_EGRESS_TOKEN_KEY_FILE")
        return key


def parse_hostport(text: str, what: str) -> Address:
    host, sep, port = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise EgressPolicyError(f"{what}: expected HOST:PORT, got {text!r}")
    return host.lower(), int(port)


def parse_upstreams(specs: list[str]) -> Upstreams:
    """Parse ``HOST:PORT=ADDR:PORT`` entries (``--egress-upstream``)."""
    result: Upstreams = {}
    for spec in specs:
        target, sep, dial = spec.partition("=")
        if not sep:
            raise EgressPolicyError(f"--egress-upstream: expected HOST:PORT=ADDR:PORT, got {spec!r}")
        result[parse_hostport(target, "--egress-upstream")] = parse_hostport(dial, "--egress-upstream")
    return result
