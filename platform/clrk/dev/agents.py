"""From a TaskAgent and its build context to the settings of its in-process shim. Pure.

The agent runs on the host's filesystem, read-only: its Dockerfile's COPY sources are bound at
their destinations (bubblewrap), and an entrypoint that is one of those destinations is run
from its (staged) source, so the plain sandbox finds it too.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from pathlib import Path

from clrk.api import TaskAgent
from clrk.manifests import Bundle
from clrk.manifests.dockerfiles import BuildContext
from clrk_runtime.protocol.keys import namespace_key, namespace_of
from clrk_runtime.settings import RuntimeSettings

__all__ = ["copy_binds", "runtime_settings"]


def copy_binds(context: BuildContext) -> dict[str, str]:
    """``destination → host source`` for each COPY/ADD of the build context."""
    binds = {}
    for copied in context.image.copies:
        source = (context.path / copied.source).resolve()
        if source.is_relative_to(context.path.resolve()):
            binds[posixpath.normpath(copied.destination)] = str(source)
    return binds


def runtime_settings(
    agent: TaskAgent,
    bundle: Bundle,
    *,
    egress_proxy: str,
    token_key: bytes,
    ca_bundle: Path,
    sandbox: str,
    agent_path: str,
    binds: Mapping[str, str],
    request_key_file: Path | None = None,
    heartbeat_seconds: float | None = None,
) -> RuntimeSettings:
    """``binds`` maps each COPY destination to the host path holding that file;
    ``request_key_file`` holds the key the ingress signs this agent's requests with;
    ``heartbeat_seconds``: silence before a keep-alive on a streamed answer (the shim's default
    when None)."""
    argv = bundle.argv(agent)
    if argv and argv[0] in binds:
        argv = [binds[argv[0]], *argv[1:]]
    spec = agent.spec
    extra = {} if heartbeat_seconds is None else {"heartbeat_seconds": heartbeat_seconds}
    return RuntimeSettings.model_validate(
        {
            **extra,
            "command": argv,
            "agent": agent.ref,
            "timeout": spec.timeout.total_seconds(),
            "warm_pool": spec.warm_pool_size,
            "warm_start": spec.warm_start,
            "max_concurrency": spec.max_concurrency or 16,
            "sandbox": sandbox,
            "agent_env": agent.env,
            "binds": [f"{source}:{dest}" for dest, source in binds.items()],
            "egress_proxy": egress_proxy,
            "egress_token_key": namespace_key(token_key, "proxy-token", namespace_of(agent.ref)).decode("ascii"),
            "ca_bundle": ca_bundle,
            "agent_path": agent_path,
            "request_key_file": request_key_file,
        }
    )
