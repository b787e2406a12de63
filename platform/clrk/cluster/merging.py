"""One egress configuration out of many ConfigMaps. Pure.

The compiler writes one ConfigMap per TaskAgent and per CredentialInjectionPolicy into
clrk-system (label ``clrk.dev/egress-config``), so that separate ``clrk apply`` runs never
overwrite each other's entries. The gateway reads one file (``--config``, re-read on change):
``clrk apply``, prune, delete and the operator rewrite ConfigMap ``clrk-egress-config`` (key
``config.json``) as the merge of them all, which the egress Deployment mounts.
"""

from __future__ import annotations

import json
from typing import Any

from clrk.api.egress import EgressConfig
from clrk.manifests.policies import EGRESS_CONFIG_LABEL, SYSTEM_NAMESPACE

__all__ = ["MERGED_CONFIGMAP", "merged_egress_config", "selector"]

MERGED_CONFIGMAP = "clrk-egress-config"


def merged_egress_config(configmaps: list[dict[str, Any]]) -> dict[str, Any]:
    """The ConfigMap holding the union of the agents and injections of ``configmaps``, in name order."""
    agents: dict[str, Any] = {}
    injections: list[Any] = []
    for body in sorted(configmaps, key=lambda b: str(b["metadata"]["name"])):
        part = EgressConfig.model_validate_json((body.get("data") or {}).get("config.json", "{}"))
        agents.update(part.agents)
        injections += part.injections
    whole = EgressConfig(agents=agents, injections=tuple(injections))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": MERGED_CONFIGMAP,
            "namespace": SYSTEM_NAMESPACE,
            "labels": {"app.kubernetes.io/managed-by": "clrk", "app.kubernetes.io/part-of": "clrk"},
        },
        "data": {"config.json": json.dumps(whole.model_dump(mode="json"), sort_keys=True)},
    }


def selector() -> str:
    return f"{EGRESS_CONFIG_LABEL}=true"
