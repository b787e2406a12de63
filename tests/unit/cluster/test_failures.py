"""What users read when the cluster refuses."""

from __future__ import annotations

import json

import pytest

from clrk.cluster.failures import api_failure, conflicts, missing_kind

MANAGER = 'conflict with "kubectl" using v1'
CONFLICT = {
    "kind": "Status",
    "status": "Failure",
    "message": 'Apply failed with 2 conflicts: conflict with "kubectl" using v1: .spec.replicas',
    "reason": "Conflict",
    "details": {
        "causes": [
            {
                "reason": "FieldManagerConflict",
                "message": 'conflict with "kubectl" using v1',
                "field": ".spec.replicas",
            },
            {"reason": "FieldManagerConflict", "message": 'conflict with "kubectl" using v1', "field": ".data.x"},
        ]
    },
    "code": 409,
}


def test_conflict_names_fields_manager_and_the_way_out() -> None:
    assert [(c.field, c.manager) for c in conflicts(json.dumps(CONFLICT))] == [
        (".spec.replicas", "kubectl"),
        (".data.x", "kubectl"),
    ]
    message = str(api_failure(409, json.dumps(CONFLICT).encode(), "Service ns/bot", "m/agent.yaml"))
    assert message.startswith("m/agent.yaml: Service ns/bot: conflict: .spec.replicas, .data.x (managed by 'kubectl')")
    assert "--force-conflicts" in message


def test_rejection_carries_the_server_message() -> None:
    body = {"kind": "Status", "message": 'ConfigMap "X" is invalid: metadata.name: Invalid value', "code": 422}
    assert str(api_failure(422, json.dumps(body), "ConfigMap ns/X", "a.yaml")) == (
        'a.yaml: ConfigMap ns/X: rejected by the cluster: ConfigMap "X" is invalid: metadata.name: Invalid value'
    )


def test_missing_namespace_says_how_to_create_it() -> None:
    body = {"message": 'namespaces "team" not found', "details": {"name": "team", "kind": "namespaces"}, "code": 404}
    assert "`kubectl create namespace team`" in str(api_failure(404, json.dumps(body)))


def test_forbidden_points_at_the_kubeconfig_user() -> None:
    assert "check the user of your kubeconfig" in str(api_failure(403, "forbidden"))


@pytest.mark.parametrize(
    ("api_version", "hint"),
    [
        ("clrk.dev/v1alpha1", "run `clrk install`"),
        ("serving.knative.dev/v1", "Knative Serving is not installed"),
        ("sources.knative.dev/v1", "Knative Eventing is not installed"),
        ("example.com/v1", "install the CRD"),
    ],
)
def test_missing_kinds_name_what_to_install(api_version: str, hint: str) -> None:
    assert hint in missing_kind(api_version, "Thing", "kind-clrk")
