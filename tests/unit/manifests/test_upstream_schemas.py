"""What the compiler emits validates against the upstream Knative CRD schemas (unmodified copies
in tests/data/crds), with unknown fields rejected as the API server would prune them. No schema covers annotation
keys, so those are checked against Knative's documented names here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest

from clrk.manifests import compile_bundle, load_bundle
from clrk.manifests.documents import load_all

REPO = Path(__file__).resolve().parents[3]
SHARED_CRDS = REPO / "tests" / "data" / "crds"
GOLDEN = Path(__file__).parent / "golden"

KNATIVE_ANNOTATIONS = {
    "autoscaling.knative.dev/min-scale",
    "autoscaling.knative.dev/max-scale",
    "autoscaling.knative.dev/initial-scale",
}


def _strict(node: Any) -> Any:
    """Close every object schema that lists its properties, as pruning would."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    return out


def _schema(filename: str, version: str) -> dict[str, Any]:
    path = SHARED_CRDS / filename
    if not path.exists():
        pytest.fail(f"{path} is missing: the upstream CRDs live in tests/data/crds")
    crd = load_all(path.read_text())[0]
    for served in crd["spec"]["versions"]:
        if served["name"] == version:
            root = served["schema"]["openAPIV3Schema"]
            # The API server owns these three whether or not a CRD's schema lists them.
            for key in ("apiVersion", "kind"):
                root["properties"].setdefault(key, {"type": "string"})
            root["properties"].setdefault("metadata", {"type": "object"})
            return _strict(root)  # type: ignore[no-any-return]
    raise AssertionError(f"{filename} has no version {version}")


def _compiled(kind: str) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for case in sorted(GOLDEN.iterdir()):
        if (case / "input.yaml").exists():
            objects += compile_bundle(load_bundle([str(case / "input.yaml")]))
    objects += compile_bundle(load_bundle([str(REPO / "examples")]))
    found = [o for o in objects if o["kind"] == kind and "knative.dev" in o["apiVersion"]]
    assert found, f"no {kind} compiled"
    return found


def test_knative_services_validate_against_upstream_schema() -> None:
    schema = _schema("knative-serving-service.yaml", "v1")
    for service in _compiled("Service"):
        jsonschema.validate(service, schema)


def test_ping_sources_validate_against_upstream_schema() -> None:
    schema = _schema("knative-eventing-pingsource.yaml", "v1")
    for source in _compiled("PingSource"):
        jsonschema.validate(source, schema)


def test_strict_schema_rejects_a_misspelt_field() -> None:
    schema = _schema("knative-serving-service.yaml", "v1")
    service = _compiled("Service")[0]
    service["spec"]["template"]["spec"]["containerConcurency"] = 4
    with pytest.raises(jsonschema.ValidationError, match="containerConcurency"):
        jsonschema.validate(service, schema)


def test_annotation_keys_are_knatives_own() -> None:
    for service in _compiled("Service"):
        keys = set(service["spec"]["template"]["metadata"]["annotations"])
        assert keys <= KNATIVE_ANNOTATIONS, keys - KNATIVE_ANNOTATIONS
        assert all(isinstance(v, str) for v in service["spec"]["template"]["metadata"]["annotations"].values())
