"""The egress gateway: the only holder of provider keys, the only way out for agents.

``clrk dev`` composes :class:`EgressGateway` in-process; ``clrk egress`` runs it alone. The
configuration models are light to import (the manifest compiler uses them); the gateway itself
(mitmproxy) is imported on first use of its name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clrk.egress.config import AgentEgress, Budget, EgressConfig, Injection, SecretRef
from clrk.egress.settings import EgressSettings

if TYPE_CHECKING:
    from clrk.egress.gateway import EgressGateway
    from clrk.egress.messages import ModelUsage
    from clrk.egress.secrets import DirectorySecrets, StaticSecrets
    from clrk.egress.usage import ModelCall, UsageStore

__all__ = [
    "AgentEgress",
    "Budget",
    "DirectorySecrets",
    "EgressConfig",
    "EgressGateway",
    "EgressSettings",
    "Injection",
    "ModelCall",
    "ModelUsage",
    "SecretRef",
    "StaticSecrets",
    "UsageStore",
]

_LAZY = {
    "EgressGateway": "clrk.egress.gateway",
    "ModelUsage": "clrk.egress.messages",
    "DirectorySecrets": "clrk.egress.secrets",
    "StaticSecrets": "clrk.egress.secrets",
    "ModelCall": "clrk.egress.usage",
    "UsageStore": "clrk.egress.usage",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'clrk.egress' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
