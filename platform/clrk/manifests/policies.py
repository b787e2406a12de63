"""Compile TaskAgents and CredentialInjectionPolicies into the egress gateway's configuration.

Pure: Secrets stay references (name and key); their values are read only by the gateway.
A policy whose ``agents`` list is empty applies to every TaskAgent of its namespace that the same
manifests declare.
"""

from __future__ import annotations

import json
from typing import Any

from clrk.api.egress import AgentEgress, Budget, EgressConfig, Injection, SecretRef
from clrk.manifests.parsing import Manifests

__all__ = ["EGRESS_CONFIG_LABEL", "SYSTEM_NAMESPACE", "egress_config", "egress_configmaps"]

SYSTEM_NAMESPACE = "clrk-system"
EGRESS_CONFIG_LABEL = "clrk.dev/egress-config"


def egress_config(manifests: Manifests) -> EgressConfig:
    """Who may reach which host, with which injected header, under which budget."""
    injections = []
    allow: dict[str, list[str]] = {agent.ref: [] for agent in manifests.agents}
    for policy in manifests.policies:
        namespace, spec = policy.metadata.namespace, policy.spec
        names = spec.agents or [a.metadata.name for a in manifests.agents if a.metadata.namespace == namespace]
        refs = tuple(f"{namespace}/{name}" for name in names)
        injections.append(
            Injection(
                host=spec.host,
                header=spec.header,
                secret=SecretRef(name=spec.secret_key_ref.name, key=spec.secret_key_ref.key),
                format=spec.format,
                agents=refs,
            )
        )
        for ref in refs:
            if ref in allow and spec.host not in allow[ref]:
                allow[ref].append(spec.host)
    agents = {}
    for agent in manifests.agents:
        hosts = allow[agent.ref] + [h for h in agent.spec.egress.allow if h not in allow[agent.ref]]
        budget = agent.spec.budget
        agents[agent.ref] = AgentEgress(
            allow=tuple(hosts),
            budget=Budget(tokens=budget.tokens, window_seconds=budget.window.total_seconds()) if budget else None,
        )
    return EgressConfig(agents=agents, injections=tuple(injections))


def _configmap(name: str, source: dict[str, str], config: EgressConfig) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": SYSTEM_NAMESPACE,
            "labels": {EGRESS_CONFIG_LABEL: "true", **source},
        },
        "data": {"config.json": json.dumps(config.model_dump(mode="json"), sort_keys=True)},
    }


def egress_configmaps(manifests: Manifests) -> list[dict[str, Any]]:
    """One ConfigMap per agent and per policy, in clrk-system, which the gateway merges.

    One object per source (not one shared object) so that separate ``clrk apply`` runs never
    overwrite each other's entries.
    """
    whole = egress_config(manifests)
    out = []
    for agent in manifests.agents:
        part = EgressConfig(agents={agent.ref: whole.agents[agent.ref]})
        labels = {
            "clrk.dev/agent": agent.metadata.name,
            "clrk.dev/namespace": agent.metadata.namespace,
        }
        out.append(_configmap(f"agent.{agent.metadata.namespace}.{agent.metadata.name}", labels, part))
    for policy, injection in zip(manifests.policies, whole.injections, strict=True):
        labels = {
            "clrk.dev/policy": policy.metadata.name,
            "clrk.dev/namespace": policy.metadata.namespace,
        }
        name = f"policy.{policy.metadata.namespace}.{policy.metadata.name}"
        out.append(_configmap(name, labels, EgressConfig(injections=(injection,))))
    return out
