"""What `clrk apply` sends: labels, owners, order, prune selection. No cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from clrk.cluster.planning import (
    LABEL_APPLY_SET,
    LABEL_OWNER,
    apply_set_id,
    key_of,
    owner_label,
    plan_apply,
    stale,
    tie_to_owner,
)
from clrk.errors import SpecError
from clrk.manifests import load_bundle

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = str(REPO / "examples" / "jq-bot" / "manifests")


def test_parents_first_then_children_each_tied_to_its_owner() -> None:
    plan = plan_apply(load_bundle([EXAMPLE]), "set-1")
    assert [i.key[1] for i in plan.parents] == ["TaskAgent", "CredentialInjectionPolicy"]
    assert all(i.body["metadata"]["labels"][LABEL_APPLY_SET] == "set-1" for i in plan.items)
    owners = {i.what: i.body["metadata"]["labels"].get(LABEL_OWNER) for i in plan.children}
    assert owners == {
        "Service default/jq-bot": "TaskAgent.default.jq-bot",
        "Service clrk/clrk-default-jq-bot": "TaskAgent.default.jq-bot",
        "ConfigMap clrk-system/agent.default.jq-bot": "TaskAgent.default.jq-bot",
        "ConfigMap clrk-system/policy.default.anthropic": "CredentialInjectionPolicy.default.anthropic",
    }
    assert all(i.source.endswith(".yaml") for i in plan.children)
    assert plan.agent_services == [("default", "jq-bot")]


def test_owner_references_only_within_a_namespace() -> None:
    plan = plan_apply(load_bundle([EXAMPLE]), "s")
    uids = {("TaskAgent", "default", "jq-bot"): "u-1", ("CredentialInjectionPolicy", "default", "anthropic"): "u-2"}
    tied = {i.what: tie_to_owner(i, uids)["metadata"].get("ownerReferences") for i in plan.children}
    assert tied["Service default/jq-bot"] == [
        {
            "apiVersion": "clrk.dev/v1alpha1",
            "kind": "TaskAgent",
            "name": "jq-bot",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert tied["Service clrk/clrk-default-jq-bot"] is None


def test_apply_set_id_is_stable_and_validated() -> None:
    assert apply_set_id(["a/b/", "c"]) == apply_set_id(["c", "a/b"])
    assert apply_set_id(["a"]) != apply_set_id(["b"])
    assert apply_set_id(["a"], "prod-agents") == "prod-agents"
    with pytest.raises(SpecError, match="label value"):
        apply_set_id(["a"], "not a label")


def test_long_owner_labels_stay_valid() -> None:
    label = owner_label(("TaskAgent", "n" * 63, "a" * 63))
    assert len(label) <= 63 and label.startswith("TaskAgent.")


def test_stale_keeps_desired_and_deletes_children_before_parents() -> None:
    def obj(api: str, kind: str, name: str) -> dict[str, object]:
        return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": "ns"}}

    live = [obj("clrk.dev/v1alpha1", "TaskAgent", "old"), obj("v1", "Service", "old"), obj("v1", "Service", "kept")]
    assert [key_of(b)[1] for b in stale(live, [key_of(live[2])])] == ["Service", "TaskAgent"]


def test_unchanged_ignores_only_bookkeeping() -> None:
    from clrk.cluster.applying import unchanged

    def live(rv: str, time: str, image: str = "a", manager: str = "clrk") -> dict[str, object]:
        fields = [{"manager": manager, "operation": "Apply", "time": time, "fieldsV1": {"f:spec": {}}}]
        return {"metadata": {"name": "x", "resourceVersion": rv, "managedFields": fields}, "spec": {"image": image}}

    assert unchanged(live("1", "t1"), live("2", "t2"))
    assert not unchanged(live("1", "t1"), live("2", "t2", image="b"))
    assert not unchanged(live("1", "t1"), live("2", "t2", manager="other")), "taking fields over is a change"
