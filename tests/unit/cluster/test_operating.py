"""The operator's pure half: one TaskAgent object in, the objects to apply out."""

from __future__ import annotations

from typing import Any

import pytest

from clrk.cluster.reconciling import desired, egress_items
from clrk.errors import ClrkError, SpecError


def body(command: list[str] | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"image": "img:1", **({"command": command} if command else {})}
    return {
        "apiVersion": "clrk.dev/v1alpha1",
        "kind": "TaskAgent",
        "metadata": {"name": "bot", "namespace": "ns", "uid": "u", "generation": 3, "labels": labels or {}},
        "spec": {"template": {"spec": spec}},
        "status": {"observedGeneration": 2},
    }


POLICY = {
    "apiVersion": "clrk.dev/v1alpha1",
    "kind": "CredentialInjectionPolicy",
    "metadata": {"name": "anthropic", "namespace": "ns", "uid": "p"},
    "spec": {"host": "api.anthropic.com", "header": "x-api-key", "secretKeyRef": {"name": "s", "key": "k"}},
}


def test_compiles_the_agent_with_its_policies_hosts() -> None:
    plan = desired(body(["/agent"]), [POLICY])
    assert [i.what for i in plan.children] == [
        "Service ns/bot",
        "Service clrk/clrk-bot",
        "ConfigMap clrk-system/agent.ns.bot",
    ]
    assert "api.anthropic.com" in plan.children[2].body["data"]["config.json"]
    assert plan.apply_set == "gitops"


def test_keeps_the_apply_set_of_clrk_apply() -> None:
    assert desired(body(["/agent"], {"clrk.dev/apply-set": "prod"}), []).apply_set == "prod"


def test_command_is_required_in_the_cluster() -> None:
    with pytest.raises(SpecError, match=r"spec\.template\.spec\.command: required"):
        desired(body(), [])


def test_invalid_spec_is_reported() -> None:
    broken = body(["/agent"])
    broken["spec"]["timeout"] = "forever"
    with pytest.raises(ClrkError, match=r"TaskAgent ns/bot: spec\.timeout"):
        desired(broken, [])


def test_egress_items_cover_the_namespace_and_keep_apply_sets() -> None:
    other = body(["/agent"], {"clrk.dev/apply-set": "prod"})
    other["metadata"]["name"] = "other"
    items = egress_items([body(["/agent"]), other, body()], [POLICY])
    names = {i.key[3]: i.body["metadata"]["labels"]["clrk.dev/apply-set"] for i in items}
    assert names == {"agent.ns.bot": "gitops", "agent.ns.other": "prod", "policy.ns.anthropic": "gitops"}
    policy = next(i for i in items if i.key[3] == "policy.ns.anthropic")
    assert '"ns/bot"' in policy.body["data"]["config.json"] and '"ns/other"' in policy.body["data"]["config.json"]
