"""The agent's environment: an allow-list built from scratch, never inherited.

Pure: settings and the invocation's facts in, a dict out. Only ``PATH``, the CA-trust hints, the
proxy variables, ``CLRK_METADATA_*``, ``HOME``/``TMPDIR``, ``TRACEPARENT`` and the manifest's
``env`` reach the agent; nothing of the shim's own environment does.
"""

from __future__ import annotations

from urllib.parse import quote

from clrk_runtime.protocol.durations import rfc3339
from clrk_runtime.sandbox.layouts import SandboxPaths
from clrk_runtime.settings import RuntimeSettings

__all__ = ["CA_VARIABLES", "PER_REQUEST", "PROXY_VARIABLES", "READY_FD", "agent_environment"]

CA_VARIABLES = ("SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")
READY_FD = "CLRK_READY_FD"
"""A warm-started agent's readiness descriptor: it writes a line there once its start-up is done."""
PER_REQUEST = ("CLRK_METADATA_INVOCATION_ID", "CLRK_METADATA_DEADLINE", "TRACEPARENT")
"""What only an agent started for its request has in its environment; a warm-started one (started
before its request existed) reads them from the envelope: ``clrkinvocationid``, ``clrkdeadline``,
``traceparent``."""


def agent_environment(
    settings: RuntimeSettings,
    paths: SandboxPaths,
    *,
    invocation_id: str | None,
    deadline: float | None,
    traceparent: str,
    proxy_token: str | None,
    proxy_user: str | None = None,
    ready_fd: int | None = None,
) -> dict[str, str]:
    """The complete environment of one sandbox's entrypoint.

    For an invocation: its id and deadline, the proxy credentials ``proxy_user`` (default: the
    invocation id) and ``proxy_token``. For a warm start (``invocation_id`` and ``deadline`` None,
    ``ready_fd`` the readiness descriptor): none of :data:`PER_REQUEST`, and the sandbox's own
    proxy credentials (see :mod:`clrk_runtime.sandbox.identities`).
    """
    namespace, _, name = settings.agent.rpartition("/")
    env = {
        "PATH": settings.agent_path,
        "HOME": paths.home,
        "TMPDIR": paths.tmp,
        "CLRK_METADATA_AGENT": settings.agent,
        "CLRK_METADATA_NAMESPACE": namespace,
        "CLRK_METADATA_NAME": name,
        "CLRK_METADATA_RESPONSE_HEADERS": paths.response_headers,
    }
    if invocation_id is not None:
        env["CLRK_METADATA_INVOCATION_ID"] = invocation_id
    if deadline is not None:
        env["CLRK_METADATA_DEADLINE"] = rfc3339(deadline)
    if ready_fd is not None:
        env[READY_FD] = str(ready_fd)
    if traceparent:
        env["TRACEPARENT"] = traceparent
    if settings.ca_bundle is not None:
        env.update(dict.fromkeys(CA_VARIABLES, str(settings.ca_bundle)))
    if paths.proxy is not None:
        user = proxy_user if proxy_user is not None else invocation_id
        auth = f"{quote(user or '', safe='')}:{proxy_token}@" if proxy_token else ""
        env.update(dict.fromkeys(PROXY_VARIABLES, f"http://{auth}{paths.proxy}"))
        env["NO_PROXY"] = env["no_proxy"] = ""
    env.update(settings.agent_env)
    return env
