"""The operator's pure half: one TaskAgent (or TaskSchedule) object in, the objects to apply out."""

from __future__ import annotations

from typing import Any

import pytest

from clrk.cluster.reconciling import desired, desired_schedule, egress_items
from clrk.errors import ClrkError, SpecError
from clrk.manifests import ClusterOptions


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
        "Service clrk/clrk-ns-bot",
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


def test_warm_start_without_a_warm_pool_is_reported() -> None:
    broken = body(["/agent"])
    broken["spec"]["warmStart"] = True
    with pytest.raises(ClrkError, match=r"TaskAgent ns/bot: spec\.warmStart: .*needs spec\.warmPoolSize of at least 1"):
        desired(broken, [])
    broken["spec"]["warmPoolSize"] = 1
    [service, *_] = desired(broken, []).children
    env = service.body["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "CLRK_WARM_START", "value": "true"} in env


def test_egress_items_cover_the_namespace_and_keep_apply_sets() -> None:
    other = body(["/agent"], {"clrk.dev/apply-set": "prod"})
    other["metadata"]["name"] = "other"
    items = egress_items([body(["/agent"]), other, body()], [POLICY])
    names = {i.key[3]: i.body["metadata"]["labels"]["clrk.dev/apply-set"] for i in items}
    assert names == {"agent.ns.bot": "gitops", "agent.ns.other": "prod", "policy.ns.anthropic": "gitops"}
    policy = next(i for i in items if i.key[3] == "policy.ns.anthropic")
    assert '"ns/bot"' in policy.body["data"]["config.json"] and '"ns/other"' in policy.body["data"]["config.json"]


def schedule_body(cron: str = "CRON_TZ=Europe/Paris 0 9 * * 1-5") -> dict[str, Any]:
    return {
        "apiVersion": "clrk.dev/v1alpha1",
        "kind": "TaskSchedule",
        "metadata": {"name": "morning", "namespace": "ns", "uid": "s", "generation": 1},
        "spec": {"agent": "bot", "schedule": cron, "data": {"k": 1}},
        "status": {},
    }


def test_a_schedule_compiles_to_its_ping_source_without_its_agent() -> None:
    plan = desired_schedule(schedule_body())
    (item,) = plan.children
    assert item.what == "PingSource ns/morning" and item.owner == ("TaskSchedule", "ns", "morning")
    assert item.body["spec"]["schedule"] == "0 9 * * 1-5" and item.body["spec"]["timezone"] == "Europe/Paris"
    assert plan.apply_set == "gitops"


def test_an_invalid_schedule_is_reported() -> None:
    with pytest.raises(ClrkError, match=r"TaskSchedule ns/morning: spec\.schedule: .*above 6"):
        desired_schedule(schedule_body("0 9 * * 7"))


def test_agents_compile_with_the_operators_options() -> None:
    options = ClusterOptions(runtime_image="reg.corp/runtime:1", cluster_domain="corp.internal")
    service = desired(body(["/agent"]), [], options).children[0].body
    pod = service["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["image"] == "reg.corp/runtime:1"
    assert {"name": "CLRK_EGRESS_PROXY", "value": "clrk-egress.clrk-system.svc.corp.internal:3128"} in pod[
        "containers"
    ][0]["env"]
