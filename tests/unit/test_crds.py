"""The CRDs kept in platform/config/crds are exactly what the models generate, and they accept
the examples' objects."""

from __future__ import annotations

from pathlib import Path

import jsonschema

from clrk.api.crds import all_crds, crd_filename
from clrk.manifests.documents import load_all
from clrk.manifests.loading import load_documents

REPO = Path(__file__).resolve().parents[2]
KEPT = REPO / "platform" / "config" / "crds"


def test_kept_crds_match_the_models() -> None:
    generated = {crd_filename(crd): crd for crd in all_crds()}
    kept = {p.name: load_all(p.read_text())[0] for p in KEPT.glob("*.yaml")}
    assert kept == generated, "platform/config/crds is stale: run `make crds`"


def test_examples_validate_against_our_crds() -> None:
    schemas = {
        crd["spec"]["names"]["kind"]: crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"] for crd in all_crds()
    }
    documents = load_documents([str(REPO / "examples")])
    ours = [d for d in documents if d.kind in schemas]
    assert ours
    for doc in ours:
        jsonschema.Draft4Validator(schemas[doc.kind]).validate(doc.body)


def test_schemas_are_structural() -> None:
    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            if "properties" in node or "items" in node:
                assert "type" in node, f"{path}: no type"
            assert "$ref" not in node and "anyOf" not in node, path
            for key, value in node.items():
                walk(value, f"{path}.{key}")

    for crd in all_crds():
        walk(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], crd["metadata"]["name"])
