"""The egress gateway: the only holder of provider keys, the only way out for agents.

``clrk dev`` composes :class:`clrk.egress.gateway.EgressGateway` in-process; ``clrk egress`` runs
it alone (:mod:`clrk.egress.serving`). The gateway is one addon per concern (see
:mod:`clrk.egress.gateway`); its configuration models live in the API layer
(:mod:`clrk.api.egress`), since the manifest compiler writes what the gateway reads.

Nothing is imported here: the gateway's modules import mitmproxy (≈ 0.4 s), which a CLI command
that only reads :mod:`clrk.egress.settings` must not pay for.
"""
