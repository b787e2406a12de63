"""What the egress gateway enforces: the contract between the manifest compiler and the gateway.

The compiler builds one :class:`EgressConfig` from TaskAgents and CredentialInjectionPolicies
(:func:`clrk.manifests.policies.egress_config`); ``clrk dev`` hands it to the gateway in-process,
and in a cluster it travels as JSON in ConfigMaps (:func:`clrk.manifests.policies.egress_configmaps`,
merged by :mod:`clrk.cluster.merging`). It lives in the API layer, beside the resources it is
compiled from, so that the compiler never imports the gateway (mitmproxy) and the gateway never
imports the compiler. Secrets stay references: the values are read only by the gateway, at the
edge (``--secret`` in ``clrk dev``, mounted Secret files in a cluster).

Field names on the wire are the Python names (``window_seconds``), not camelCase: this is
clrk's own JSON, not a Kubernetes resource.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AgentEgress", "Budget", "EgressConfig", "Injection", "SecretRef"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SecretRef(_Frozen):
    """A key of a Kubernetes Secret (or, in ``clrk dev``, of a ``--secret NAME=ENVVAR:KEY``)."""

    name: str
    key: str


class Injection(_Frozen):
    """Write a secret into one header of requests to one host, for some agents."""

    host: str
    """Exact host name (``api.anthropic.com``); the key is injected only over verified TLS."""
    header: str
    """Header to set (``x-api-key``); whatever credential headers the agent sent are removed."""
    secret: SecretRef
    format: str = "{value}"
    """How the header's value is built from the secret, e.g. ``Bearer {value}``."""
    agents: tuple[str, ...]
    """``namespace/name`` of every agent this injection applies to."""


class Budget(_Frozen):
    """A ceiling of model tokens (input + output, cache included) per rolling window."""

    tokens: int = Field(gt=0)
    window_seconds: float = Field(gt=0)


class AgentEgress(_Frozen):
    """Where one agent may go, and how much it may spend."""

    allow: tuple[str, ...] = ()
    """Hosts this agent may reach: its policies' hosts plus ``spec.egress.allow``."""
    budget: Budget | None = None


class EgressConfig(_Frozen):
    """The whole gateway configuration; ``agents`` is keyed by ``namespace/name``."""

    agents: dict[str, AgentEgress] = {}
    injections: tuple[Injection, ...] = ()
