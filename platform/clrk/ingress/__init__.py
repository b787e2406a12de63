"""The ingress: authenticates callers and routes ``POST /`` to an agent's runtime shim."""

from clrk.ingress.app import InvocationRecord, create_app
from clrk.ingress.callers import CallerKey, CallerKeys, caller_key, key_digest
from clrk.ingress.forwarding import AgentTarget, Forwarder, HttpForwarder, InProcessForwarder
from clrk.ingress.settings import IngressSettings

__all__ = [
    "AgentTarget",
    "CallerKey",
    "CallerKeys",
    "Forwarder",
    "HttpForwarder",
    "InProcessForwarder",
    "IngressSettings",
    "InvocationRecord",
    "caller_key",
    "create_app",
    "key_digest",
]
