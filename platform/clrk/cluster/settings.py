"""What ``clrk install`` records on the cluster: ConfigMap ``clrk-system/clrk-platform``, the
images and cluster domain it installed, which ``clrk apply`` and the operator read so that they
compile agents for the platform as installed (under their own flags and ``CLRK_*`` settings,
:class:`~clrk.manifests.options.PlatformSettings`). Pure.
"""

from __future__ import annotations

from typing import Any

from clrk.manifests.options import PLATFORM_KEYS, ClusterOptions
from clrk.manifests.policies import SYSTEM_NAMESPACE

__all__ = ["PLATFORM_CONFIGMAP", "platform_configmap", "recorded_settings"]

PLATFORM_CONFIGMAP = "clrk-platform"


def recorded_settings(configmap: dict[str, Any] | None) -> dict[str, str]:
    """The field values ConfigMap ``clrk-platform`` holds (none when there is no such ConfigMap)."""
    data = (configmap or {}).get("data") or {}
    return {name: str(data[key]) for key, name in PLATFORM_KEYS.items() if data.get(key)}


def platform_configmap(options: ClusterOptions) -> dict[str, Any]:
    """ConfigMap ``clrk-system/clrk-platform``: what ``clrk install`` installed."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": PLATFORM_CONFIGMAP,
            "namespace": SYSTEM_NAMESPACE,
            "labels": {"app.kubernetes.io/part-of": "clrk", "app.kubernetes.io/managed-by": "clrk"},
        },
        "data": options.recorded(),
    }
