"""The shim's one settings object, read from ``CLRK_*`` variables (and Knative's ``PORT``).

Built once in :func:`clrk_runtime.server.main.main` (or by whoever composes :class:`AgentRuntime`
in-process) and passed down; nothing below reads ``os.environ``.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from clrk_runtime.protocol.durations import MAX_TIMEOUT_S, parse_duration
from clrk_runtime.protocol.streams import HEARTBEAT_S

__all__ = ["RuntimeSettings"]


class RuntimeSettings(BaseSettings):
    """How one shim serves one TaskAgent. Every field is also ``CLRK_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="CLRK_", populate_by_name=True, extra="forbid")

    command: list[str] = Field(default_factory=list)
    """The agent's entrypoint and arguments (``-- ENTRYPOINT ARGS…`` on the command line)."""
    agent: str = "default/agent"
    """``namespace/name`` of the TaskAgent this shim serves."""
    port: int = Field(8080, validation_alias=AliasChoices("port", "CLRK_PORT", "PORT"))
    """TCP port to listen on; Knative's ``PORT`` is honoured too."""
    host: str = "0.0.0.0"  # noqa: S104 - a pod's server listens on all interfaces
    server: Literal["clrk", "functions-framework"] = "clrk"
    """The HTTP app in front of the runtime: clrk's own (leanest), or functions-framework's."""
    timeout: float = 100.0
    """Seconds one invocation may run (``spec.timeout``; accepts ``100s``, ``1m``)."""
    warm_pool: int = Field(0, ge=0)
    """Sandboxes kept created and waiting; the shim is ready once this many exist."""
    warm_start: bool = False
    """Start each warm sandbox's entrypoint before its request (TaskAgent ``spec.warmStart``): what
    the agent does before it reads stdin is paid while the sandbox waits, and it tells the shim it
    is ready by writing a line to the descriptor ``$CLRK_READY_FD`` names. Its envelope is written
    to its stdin when the request comes (see docs/agents.md, "Warm start")."""
    warm_start_timeout: float = Field(60.0, gt=0)
    """Seconds a warm-started entrypoint has to say it is ready; past it, it counts as hung: it
    is killed and replaced, never handed a request (accepts ``60s``, ``1m``)."""
    max_concurrency: int = Field(16, ge=1)
    """Sandboxes running at once."""
    queue_size: int = Field(64, ge=0)
    """Invocations waiting for a free slot; past this, 503 with ``Retry-After``."""
    sandbox: Literal["auto", "bwrap", "plain"] = "auto"
    """``auto`` uses bubblewrap where it works, else the plain backend (with a warning)."""
    agent_env: dict[str, str] = Field(default_factory=dict)
    """The manifest's ``env`` (JSON in ``CLRK_AGENT_ENV``, or repeated ``--env NAME=VALUE``)."""
    binds: list[str] = Field(default_factory=list)
    """Extra read-only binds ``SRC:DEST`` into bubblewrap sandboxes."""
    egress_proxy: str | None = None
    """``host:port`` of the egress gateway; without it agents get no proxy (and no network)."""
    egress_token_key: SecretStr | None = None
    """Key shared with the egress gateway to sign per-invocation proxy tokens."""
    egress_token_key_file: Path | None = None
    """File holding that key (read once at start), e.g. a mounted Secret."""
    ca_bundle: Path | None = None
    """CA bundle the agent must trust (the egress gateway's CA); sets the CA-trust variables."""
    sandbox_uid: int = Field(61184, ge=1)
    """First host uid (and gid) of the range sandboxes run as when the shim is root: each live
    sandbox gets one of its own. Inside bubblewrap the agent sees uid and gid 65534 (nobody)."""
    sandbox_uids: int = Field(4096, ge=1)
    """How many uids that range holds: at least the warm pool plus max concurrency, and some to
    spare for sandboxes being removed (the default range, 61184-65279, is systemd's dynamic-user
    range, below 65535 for pods in a user namespace)."""
    agent_path: str = "/usr/local/bin:/usr/bin:/bin"
    """``PATH`` inside the sandbox."""
    head_timeout_seconds: float = Field(10.0, gt=0)
    """Longest wait for a request head (from the connection opening, or the previous answer on
    it); a head still incomplete after it gets 408, a connection with nothing sent is closed."""
    keep_alive_seconds: int = Field(120, ge=1)
    """Seconds an idle keep-alive connection stays open after its last answer (uvicorn's
    ``timeout_keep_alive``, whose own default is 5). Knative's queue-proxy keeps idle upstream
    connections for 90 s and does not retry a POST on one the server closed: this must outlast
    it. A request head begun on an idle connection is bounded by ``head_timeout_seconds``."""
    python: Annotated[list[str], NoDecode] = Field(default_factory=lambda: [sys.executable], min_length=1)
    """The argv prefix that runs this same Python (same version, its standard library; no
    site-packages needed). The spawner is started as
    ``PREFIX + ["-I", "-S", <path of clrk_runtime/launching/spawn_server.py>, FD]``, FD the
    decimal number of an inherited descriptor (a ``SOCK_SEQPACKET`` socket), with an empty
    environment, stdin on ``/dev/null``, in a session of its own, as the shim's uid (root in a
    pod). The prefix must ``exec`` that Python in the same process (the shim waits for that
    pid to end) with exactly those arguments appended, keeping descriptor FD open.
    Default: this interpreter (``sys.executable``). ``CLRK_PYTHON`` is a path, a command line
    (split as a shell would, e.g. ``/opt/clrk/bin/clrk-shim --python``) or a JSON list: the
    runtime image's launcher sets it where ``sys.executable`` cannot start on its own (a bundled
    Python whose ELF interpreter the agent's image lacks)."""
    stdin_cap: int = 10 * 1024 * 1024
    """Largest request body, bytes (413 past it)."""
    stdout_cap: int = 10 * 1024 * 1024
    """Largest response body, bytes (502 past it)."""
    stderr_tail: int = 4096
    """Bytes of the agent's last stderr kept on the invocation span."""
    heartbeat_seconds: float = Field(HEARTBEAT_S, gt=0)
    """Seconds of silence after which a streamed answer (``Accept: text/event-stream``) sends a
    heartbeat comment, so that idle proxies keep it open."""
    temp_root: Path | None = None
    """Where per-sandbox directories live (default: ``/dev/shm`` if writable, else the system
    temp dir). Plain sandboxes keep HOME/TMPDIR/work there: mind a small ``/dev/shm``."""

    request_key_file: Path | None = None
    """File holding the key the clrk ingress signs this agent's requests with (read once at
    start), e.g. a mounted Secret: its namespace's ``request`` key. With it, the shim runs only
    requests carrying a good ``X-Clrk-Signature`` (401 otherwise) and believes their
    ``X-Clrk-Invocation-Id``; without it (a shim run alone), it mints every invocation id itself."""

    # A plain sandbox's confinement (see clrk_runtime.launching.landlock).
    landlock_abi: int | None = Field(None, ge=0)
    """Highest Landlock ABI plain sandboxes use (default: the kernel's; 0: none). Lower it to
    see, or roll out, what a sandbox gets on an older kernel: the missing pieces are logged at
    start and shown in ``/readyz``."""
    sandbox_processes: int = Field(512, ge=1)
    """Processes (threads included) one plain sandbox may have at once (``RLIMIT_NPROC``). The
    kernel counts them per uid: enforced only when sandboxes get a uid of their own (the shim is
    root); a fork past it fails with ``EAGAIN``."""
    sandbox_file_size: int = Field(512 * 1024 * 1024, ge=1)
    """Largest file, bytes, a plain sandbox's process may write (``RLIMIT_FSIZE``): a write past
    it fails (``SIGXFSZ``, which kills unless caught, then ``EFBIG``)."""
    sandbox_open_files: int = Field(4096, ge=16)
    """Descriptors one process of a plain sandbox may hold (``RLIMIT_NOFILE``)."""
    sandbox_disk: int = Field(1024 * 1024 * 1024, ge=1)
    """Bytes a plain sandbox's directory (its HOME, TMPDIR and work dir, in ``temp_root``: memory
    when that is ``/dev/shm``) may hold. Measured every half second off the event loop; past it
    the sandbox is killed and the caller gets 502 ``storage_exceeded``."""

    # What an agent's output may cost the shim.
    stderr_log_cap: int = Field(1024 * 1024, ge=0)
    """Bytes of one invocation's stderr logged at most (whole lines); past it, one line says how
    many bytes were dropped. The span's tail (``stderr_tail``) keeps the last bytes regardless."""

    @model_validator(mode="after")
    def _enough_uids(self) -> RuntimeSettings:
        wanted = self.warm_pool + self.max_concurrency + 1
        if self.sandbox_uids < wanted:
            raise ValueError(
                f"sandbox_uids (CLRK_SANDBOX_UIDS) is {self.sandbox_uids}: give at least "
                f"warm_pool + max_concurrency + 1 ({wanted})"
            )
        return self

    @field_validator("python", mode="before")
    @classmethod
    def _command_line(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else shlex.split(text)
        return value

    @field_validator("warm_start_timeout", mode="before")
    @classmethod
    def _seconds(cls, value: str | float | int) -> float:
        return parse_duration(value)

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: str | float | int) -> float:
        seconds = parse_duration(value)
        if not 0 < seconds <= MAX_TIMEOUT_S:
            # The egress gateway forgets a revoked invocation MAX_TIMEOUT_S (+ grace) after it.
            raise ValueError(f"timeout must be more than 0s and at most {MAX_TIMEOUT_S:g}s, got {value!r}")
        return seconds

    def token_key(self) -> bytes | None:
        """The egress token key, from the setting or its file (the file is read here)."""
        if self.egress_token_key is not None:
            return self.egress_token_key.get_secret_value().encode()
        if self.egress_token_key_file is not None:
            try:
                return self.egress_token_key_file.read_bytes().strip()
            except OSError as exc:
                raise ValueError(
                    f"egress_token_key_file (CLRK_EGRESS_TOKEN_KEY_FILE): cannot read {self.egress_token_key_file}:"
                    f" {exc.strerror}"
                ) from None
        return None
