"""Proxy tokens are checked with their namespace's key: one namespace's key mints nothing for another.

The gateway holds the platform key; a shim holds only its namespace's derived key (what a reader
of that namespace's Secrets gets). Raw CONNECTs to a real gateway.
"""

from __future__ import annotations

import time

from clrk.api.egress import AgentEgress, EgressConfig
from clrk_runtime.protocol.keys import namespace_key
from clrk_runtime.protocol.tokens import ProxyClaims, sign
from tests.integration.egress.rawproxy import basic, connect
from tests.support.egress import TOKEN_KEY, Egress


async def test_a_token_signed_with_namespace_as_key_for_agent_b_x_gets_a_407(egress: Egress) -> None:
    egress.gateway.update_config(
        EgressConfig(
            agents={"a/x": AgentEgress(allow=("api.anthropic.com",)), "b/x": AgentEgress(allow=("api.anthropic.com",))}
        )
    )
    a_key = namespace_key(TOKEN_KEY, "proxy-token", "a")
    forged = sign(ProxyClaims("inv-b", "b/x", time.time() + 60), a_key)
    own = sign(ProxyClaims("inv-a", "a/x", time.time() + 60), a_key)
    refused = await connect(egress.port, "api.anthropic.com:443", basic("inv-b", forged))
    accepted = await connect(egress.port, "api.anthropic.com:443", basic("inv-a", own))
    assert refused.status == 407
    assert refused.json()["error"] == {"type": "proxy_authentication_required", "message": "bad signature"}
    assert accepted.status == 200
