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

__all__ = ["CA_VARIABLES", "PROXY_VARIABLES", "agent_environment"]

CA_VARIABLES = ("SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")


def agent_environment(
    settings: RuntimeSettings,
    paths: SandboxPaths,
    *,
    invocation_id: str,
    deadline: float,
    traceparent: str,
    proxy_token: str | None,
) -> dict[str, str]:
    """The complete environment of one invocation's entrypoint."""
    namespace, _, name = settings.agent.rpartition("/")
    env = {
        "PATH": settings.agent_path,
        "HOME": paths.home,
        "TMPDIR": paths.tmp,
        "CLRK_METADATA_INVOCATION_ID": invocation_id,
        "CLRK_METADATA_AGENT": settings.agent,
        "CLRK_METADATA_NAMESPACE": namespace,
        "CLRK_METADATA_NAME": name,
        "CLRK_METADATA_DEADLINE": rfc3339(deadline),
        "CLRK_METADATA_RESPONSE_HEADERS": paths.response_headers,
    }
    if traceparent:
        env["TRACEPARENT"] = traceparent
    if settings.ca_bundle is not None:
        env.update(dict.fromkeys(CA_VARIABLES, str(settings.ca_bundle)))
    if paths.proxy is not None:
        auth = f"{quote(invocation_id, safe='')}:{proxy_token}@" if proxy_token else ""
        env.update(dict.fromkeys(PROXY_VARIABLES, f"http://{auth}{paths.proxy}"))
        env["NO_PROXY"] = env["no_proxy"] = ""
    env.update(settings.agent_env)
    return env
