"""The operator's pure half: TaskAgent, TaskSchedule and CredentialInjectionPolicy objects as read
from the API in, the objects to apply out, labelled as ``clrk apply`` labels them.

The compiler is the CLI's; only the input differs. Objects come from the cluster, so there is no
Dockerfile to read (an agent needs ``spec.template.spec.command``), a policy with no ``agents``
applies to every agent of its namespace that the cluster holds, and a schedule's agent need not
exist yet (GitOps tools apply in any order: its runs get 404 from the ingress until it exists).
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from clrk.api import CredentialInjectionPolicy, TaskAgent, TaskSchedule
from clrk.cluster.planning import LABEL_APPLY_SET, LABEL_OWNER, Item, Plan, owner_label, plan_apply
from clrk.errors import ClrkError, SpecError
from clrk.manifests import Bundle, ClusterOptions, Manifests
from clrk.manifests.loading import RawDocument
from clrk.manifests.parsing import field_path
from clrk.manifests.policies import SYSTEM_NAMESPACE

__all__ = ["GITOPS_APPLY_SET", "condition", "desired", "desired_schedule", "egress_items"]

GITOPS_APPLY_SET = "gitops"
"""The apply-set label of objects the operator creates for objects no ``clrk apply`` labelled."""
_NOWHERE = Path("/nonexistent")


def _model(body: dict[str, Any], kind: type[Any], source: str) -> Any:
    clean = {k: v for k, v in body.items() if k != "status"}
    try:
        return kind.model_validate(clean)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ClrkError(f"{source}: {field_path(first['loc'])}: {first['msg']}") from None


def desired(body: dict[str, Any], policies: list[dict[str, Any]], options: ClusterOptions | None = None) -> Plan:
    """What one TaskAgent object compiles to, labelled as ``clrk apply`` would label it.

    Raises :class:`~clrk.errors.ClrkError` (a SpecError for a missing command) with the reason.
    """
    meta = body.get("metadata", {})
    source = f"TaskAgent {meta.get('namespace')}/{meta.get('name')}"
    agent: TaskAgent = _model(body, TaskAgent, source)
    if not agent.container.command:
        raise SpecError(
            source,
            "spec.template.spec.command",
            "required for agents applied without clrk: the operator cannot read the Dockerfile's "
            "ENTRYPOINT in the cluster (`clrk apply` reads it from the build context)",
        )
    documents = {f"TaskAgent/{agent.ref}": RawDocument(source, body, _NOWHERE)}
    valid = []
    for policy in policies:
        model: CredentialInjectionPolicy = _model(policy, CredentialInjectionPolicy, "CredentialInjectionPolicy")
        if not model.spec.agents or agent.metadata.name in model.spec.agents:
            valid.append(model)
            documents[f"CredentialInjectionPolicy/{model.ref}"] = RawDocument(model.ref, policy, _NOWHERE)
    manifests = Manifests(agents=[agent], policies=valid, sources=documents)
    plan = plan_apply(Bundle(manifests), _apply_set(body), options)
    mine = owner_label(("TaskAgent", agent.metadata.namespace, agent.metadata.name))
    plan.children = [i for i in plan.children if i.body["metadata"]["labels"].get(LABEL_OWNER) == mine]
    return plan


def desired_schedule(body: dict[str, Any], options: ClusterOptions | None = None) -> Plan:
    """What one TaskSchedule object compiles to (its PingSource, for the cluster ``options``
    describe), labelled as ``clrk apply`` would; its sink's token is the placeholder until
    :func:`~clrk.manifests.schedules.with_schedule_token` puts the real one in.

    Raises :class:`~clrk.errors.ClrkError` with the reason when the object does not validate.
    """
    meta = body.get("metadata", {})
    source = f"TaskSchedule {meta.get('namespace')}/{meta.get('name')}"
    schedule: TaskSchedule = _model(body, TaskSchedule, source)
    documents = {f"TaskSchedule/{schedule.ref}": RawDocument(source, body, _NOWHERE)}
    return plan_apply(Bundle(Manifests(schedules=[schedule], sources=documents)), _apply_set(body), options)


def condition(status: str, reason: str, message: str, now: datetime.datetime | None = None) -> dict[str, str]:
    stamp = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": "Ready", "status": status, "reason": reason, "message": message, "lastTransitionTime": stamp}


def _apply_set(body: dict[str, Any]) -> str:
    return str(((body.get("metadata") or {}).get("labels") or {}).get(LABEL_APPLY_SET, GITOPS_APPLY_SET))


def egress_items(agents: list[dict[str, Any]], policies: list[dict[str, Any]]) -> list[Item]:
    """The egress ConfigMaps (clrk-system) of one namespace: one per agent, one per policy.

    Objects that do not validate are left out here; their own handlers report them.
    """
    models: list[TaskAgent] = []
    documents: dict[str, RawDocument] = {}
    owners: dict[tuple[str, str, str], dict[str, Any]] = {}
    for body in agents:
        try:
            agent: TaskAgent = _model(body, TaskAgent, "TaskAgent")
        except ClrkError:
            continue
        if agent.container.command:
            models.append(agent)
            documents[f"TaskAgent/{agent.ref}"] = RawDocument(agent.ref, body, _NOWHERE)
            owners[("TaskAgent", agent.metadata.namespace, agent.metadata.name)] = body
    valid: list[CredentialInjectionPolicy] = []
    for body in policies:
        try:
            policy: CredentialInjectionPolicy = _model(body, CredentialInjectionPolicy, "CredentialInjectionPolicy")
        except ClrkError:
            continue
        valid.append(policy)
        documents[f"CredentialInjectionPolicy/{policy.ref}"] = RawDocument(policy.ref, body, _NOWHERE)
        owners[("CredentialInjectionPolicy", policy.metadata.namespace, policy.metadata.name)] = body
    plan = plan_apply(Bundle(Manifests(agents=models, policies=valid, sources=documents)), GITOPS_APPLY_SET)
    out = []
    for item in plan.children:
        if item.key[:3] != ("v1", "ConfigMap", SYSTEM_NAMESPACE) or item.owner not in owners:
            continue
        item.body["metadata"]["labels"][LABEL_APPLY_SET] = _apply_set(owners[item.owner])
        out.append(item)
    return out
