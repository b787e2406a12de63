"""Injection: the provider key is written into requests on their way out, never held by agents.

An addon in the shape of mitmproxy's ``upstream_auth``. For a host with an :class:`Injection`
that names the calling agent, and only when the request goes out over TLS that mitmproxy verifies
(``https`` and ``ssl_insecure`` off, so a bad upstream certificate aborts before any byte is
sent) as the policy's host (:mod:`clrk.egress.pinning`: the upstream SNI is the host dialled, and
a request whose SNI, Host or request-target names another host is refused before this; the
injector checks the three again itself), it removes every credential header the agent sent and
sets the policy's header from the secret. The value is never logged; a missing secret gets a 403
that names the secret, not a request without a key.

The choice of injection is the pure :func:`injection_for`.
"""

from __future__ import annotations

import logging

from mitmproxy import ctx, http

from clrk.api.egress import EgressConfig, Injection
from clrk.egress.denials import forbidden
from clrk.egress.identity import CLAIMS
from clrk.egress.pinning import disagreement
from clrk.egress.secrets import SecretSource

__all__ = ["CREDENTIAL_HEADERS", "CredentialInjector", "injection_for"]

log = logging.getLogger(__name__)

CREDENTIAL_HEADERS = ("x-api-key", "authorization", "proxy-authorization", "cookie")
"""Headers removed from injected requests, whatever the agent put there."""


def injection_for(config: EgressConfig, host: str, agent: str) -> Injection | None:
    host = host.lower().rstrip(".")
    for injection in config.injections:
        if injection.host.lower() == host and agent in injection.agents:
            return injection
    return None


class CredentialInjector:
    """Sets the provider credential on requests to policy hosts; the last request addon."""

    def __init__(self, config: EgressConfig, secrets: SecretSource) -> None:
        self.config = config
        self._secrets = secrets

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        claims = flow.metadata.get(CLAIMS)
        if claims is None:
            return
        injection = injection_for(self.config, flow.request.host, claims.agent)
        if injection is None:
            return
        for name in CREDENTIAL_HEADERS:
            flow.request.headers.pop(name, None)
        if flow.request.scheme != "https" or ctx.options.ssl_insecure:
            log.warning(
                "egress: not injecting into %s for %s: upstream TLS is not verified",
                flow.request.pretty_host,
                claims.agent,
            )
            return
        target = (injection.host.lower().rstrip("."), flow.request.port)
        sni = flow.client_conn.sni if flow.client_conn.tls_established else None
        reason = disagreement(target, sni=sni, host_header=flow.request.host_header, authority=flow.request.authority)
        if reason is not None:
            log.warning("egress: not injecting into %s for %s: %s", flow.request.pretty_host, claims.agent, reason)
            return
        value = self._secrets.get(injection.secret)
        if value is None:
            ref = f"{injection.secret.name}/{injection.secret.key}"
            log.error("egress: secret %s for %s is missing", ref, injection.host)
            flow.response = forbidden(
                flow.request.pretty_host,
                claims.agent,
                f"secret {ref} is not available",
                claims.invocation_id,
            )
            return
        flow.request.headers[injection.header] = injection.format.format(value=value)
