"""Where the platform's pieces are in a cluster, and the one place that holds their defaults.

:class:`ClusterOptions` is what the compiler and ``clrk install`` need to know about a cluster:
its DNS domain, the three images clrk runs, where Knative runs the pieces that call agent pods
(its activator and autoscaler, the networking layer's gateway: only those may connect to them),
and the defaults of an agent pod. The defaults below
are the only spelling of each in Python; ``platform/config`` repeats the images and the domain
for ``kubectl apply -k`` (a unit test keeps the two equal). Flags and ``CLRK_*`` settings override
them (:class:`PlatformSettings`), and ``clrk install`` records what it
installed in ConfigMap ``clrk-system/clrk-platform`` for ``clrk apply`` and the operator to read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from clrk import __version__
from clrk.manifests.policies import SYSTEM_NAMESPACE

__all__ = [
    "DEFAULT_AGENT_RESOURCES",
    "DEFAULT_CLUSTER_DOMAIN",
    "DEFAULT_KNATIVE_GATEWAY_NAMESPACE",
    "DEFAULT_KNATIVE_NAMESPACE",
    "DEFAULT_REGISTRY",
    "DEFAULT_SANDBOX_SIZE",
    "EGRESS_PORT",
    "INGRESS_NAMESPACE",
    "PLATFORM_KEYS",
    "RUNTIME_RESOURCES",
    "ClusterOptions",
    "PlatformSettings",
    "default_image",
]

DEFAULT_REGISTRY = "ghcr.io/clrk-dev"
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
"""Kubernetes' default cluster domain (kubelet's ``--cluster-domain``)."""
EGRESS_PORT = 3128
INGRESS_NAMESPACE = "clrk"
"""Where the ingress and the per-agent ``clrk-<namespace>-<name>`` Services live (callers' side)."""
DEFAULT_KNATIVE_NAMESPACE = "knative-serving"
"""Where Knative Serving runs its activator and autoscaler (its install YAML's namespace)."""
DEFAULT_KNATIVE_GATEWAY_NAMESPACE = "kourier-system"
"""Where the networking layer's gateway runs: Kourier's, the layer Knative's install guide picks
first (``istio-system`` for Istio, ``contour-internal`` for Contour)."""

DEFAULT_AGENT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "500m", "memory": "1Gi"},
    "limits": {"cpu": "2", "memory": "4Gi"},
}
"""The agent container's resources when its TaskAgent sets no ``spec.resources``: room for up to
four sandboxes (``containerConcurrency`` is at most 4) of the Claude Code CLI, ≈ 0.3-1 GiB each."""
DEFAULT_SANDBOX_SIZE = "2Gi"
"""``sizeLimit`` of the emptyDir holding the sandboxes' HOME, TMPDIR and work folders."""

RUNTIME_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "50m", "memory": "32Mi"},
    "limits": {"cpu": "500m", "memory": "128Mi"},
}
"""The init container that copies the runtime in (``cp -a``): small, but set, so that a namespace
with a ResourceQuota on limits admits the pod."""


def default_image(component: str) -> str:
    """``ghcr.io/clrk-dev/clrk-<component>:<clrk's version>``."""
    return f"{DEFAULT_REGISTRY}/clrk-{component}:{__version__}"


@dataclass(frozen=True)
class ClusterOptions:
    """Where the platform's pieces are, as ``clrk install`` lays them out."""

    runtime_image: str = field(default_factory=lambda: default_image("runtime"))
    """Copied into every agent pod by an init container: the shim and its Python."""
    ingress_image: str = field(default_factory=lambda: default_image("ingress"))
    """The ingress, and the operator (the same image: the clrk wheel)."""
    egress_image: str = field(default_factory=lambda: default_image("egress"))
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    """The cluster's DNS domain: Services are ``<name>.<namespace>.svc.<cluster_domain>``."""
    knative_namespace: str = DEFAULT_KNATIVE_NAMESPACE
    """Knative Serving's namespace: its activator may call agent pods, its autoscaler read their
    queue-proxy's metrics."""
    knative_gateway_namespace: str = DEFAULT_KNATIVE_GATEWAY_NAMESPACE
    """The networking layer's namespace: its gateway pods may call agent pods."""
    ca_configmap: str = "clrk-ca"
    platform_key_secret: str = "clrk-platform-key"  # noqa: S105 (a Secret's name)
    """In clrk-system only (key ``key``): mounted by the ingress and the gateway, read by
    ``clrk apply`` and the operator to derive each agent namespace's keys."""
    agent_keys_secret: str = "clrk-agent-keys"  # noqa: S105 (a Secret's name)
    """In each agent namespace: that namespace's ``proxy-token`` and ``request`` keys."""
    callback_secret: str = "clrk-callback-secret"  # noqa: S105 (a Secret's name)
    """In each agent namespace: key ``secret``, the Standard Webhooks secret its async
    invocations' callbacks are signed with, for the receivers of the namespace to mount."""
    agent_resources: dict[str, dict[str, str]] = field(default_factory=lambda: DEFAULT_AGENT_RESOURCES)
    sandbox_size: str = DEFAULT_SANDBOX_SIZE

    @property
    def egress_proxy(self) -> str:
        """``host:port`` of the egress gateway, as agent pods reach it."""
        return f"clrk-egress.{SYSTEM_NAMESPACE}.svc.{self.cluster_domain}:{EGRESS_PORT}"

    def recorded(self) -> dict[str, str]:
        """The settings ``clrk install`` records (ConfigMap ``clrk-platform``), by camelCase key."""
        return {key: str(getattr(self, name)) for key, name in PLATFORM_KEYS.items()}

    @classmethod
    def from_settings(cls, *layers: dict[str, Any]) -> ClusterOptions:
        """Options from ``layers`` of ``{field name: value}``, the first that sets a field winning;
        a value of None sets nothing."""
        known = {f.name for f in fields(cls)}
        chosen: dict[str, Any] = {}
        for layer in reversed(layers):
            chosen.update({k: v for k, v in layer.items() if k in known and v is not None})
        return cls(**chosen)


PLATFORM_KEYS = {
    "clusterDomain": "cluster_domain",
    "runtimeImage": "runtime_image",
    "ingressImage": "ingress_image",
    "egressImage": "egress_image",
    "knativeNamespace": "knative_namespace",
    "knativeGatewayNamespace": "knative_gateway_namespace",
}
"""The keys of ConfigMap ``clrk-platform`` → the :class:`ClusterOptions` field each sets."""


_DOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class PlatformSettings(BaseSettings):
    """Where the platform's pieces are, read at a command's edge: its flags, else ``CLRK_*``.
    Unset fields fall through to what ``clrk install`` recorded on the cluster (when the command
    reads it), then to the defaults above."""

    model_config = SettingsConfigDict(env_prefix="CLRK_", frozen=True)

    cluster_domain: str | None = None
    """``CLRK_CLUSTER_DOMAIN``: the cluster's DNS domain [cluster.local]."""
    runtime_image: str | None = None
    """``CLRK_RUNTIME_IMAGE``: copied into every agent pod [ghcr.io/clrk-dev/clrk-runtime:<version>]."""
    ingress_image: str | None = None
    """``CLRK_INGRESS_IMAGE``: the ingress and the operator [ghcr.io/clrk-dev/clrk-ingress:<version>]."""
    egress_image: str | None = None
    """``CLRK_EGRESS_IMAGE``: the egress gateway [ghcr.io/clrk-dev/clrk-egress:<version>]."""
    knative_namespace: str | None = None
    """``CLRK_KNATIVE_NAMESPACE``: Knative Serving's activator and autoscaler [knative-serving]."""
    knative_gateway_namespace: str | None = None
    """``CLRK_KNATIVE_GATEWAY_NAMESPACE``: the networking layer's gateway [kourier-system]."""

    @field_validator("cluster_domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        domain = value.strip().rstrip(".").lower()
        if not _DOMAIN.match(domain):
            raise ValueError(f"expected a DNS domain like 'cluster.local', found {value!r}")
        return domain

    @field_validator("knative_namespace", "knative_gateway_namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        if value is not None and not _NAMESPACE.match(value):
            raise ValueError(f"expected a namespace name like 'knative-serving', found {value!r}")
        return value

    def options(self, recorded: dict[str, Any] | None = None) -> ClusterOptions:
        """These settings over ``recorded`` (field name → value) over the defaults."""
        return ClusterOptions.from_settings(self.model_dump(), recorded or {})
