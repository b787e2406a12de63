"""The platform's own HTTP headers (names as sent; HTTP compares them case-insensitively).

===========================  =====================================================================
``X-Clrk-TaskAgent``         caller → ingress: ``<namespace>/<name>`` of the agent to invoke
``X-Clrk-Invocation-Id``     every answer (ingress and shim, errors included) carries the
                             invocation's id; ingress → shim: the id the ingress gave it
``X-Clrk-Timeout-Ms``        caller → ingress: a shorter deadline; ingress → shim: what is left of it
``X-Clrk-Signature``         ingress → shim: the ingress's signature of the request (see
                             :mod:`clrk_runtime.protocol.signing`)
===========================  =====================================================================
"""

from __future__ import annotations

__all__ = ["AGENT_HEADER", "INVOCATION_HEADER", "SIGNATURE_HEADER", "TIMEOUT_HEADER"]

AGENT_HEADER = "X-Clrk-TaskAgent"
INVOCATION_HEADER = "X-Clrk-Invocation-Id"
TIMEOUT_HEADER = "X-Clrk-Timeout-Ms"
SIGNATURE_HEADER = "X-Clrk-Signature"
