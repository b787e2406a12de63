"""The gateway's one config file is the union of the per-object ConfigMaps."""

from __future__ import annotations

import json
from pathlib import Path

from clrk.api.egress import EgressConfig
from clrk.cluster.merging import merged_egress_config
from clrk.manifests import compile_bundle, egress_config, load_bundle

REPO = Path(__file__).resolve().parents[3]


def test_merge_of_the_example_equals_the_compilers_whole_config() -> None:
    bundle = load_bundle([str(REPO / "examples" / "jq-bot" / "manifests")])
    parts = [o for o in compile_bundle(bundle) if o["kind"] == "ConfigMap"]
    merged = merged_egress_config(list(reversed(parts)))
    assert merged["metadata"] == {
        "name": "clrk-egress-config",
        "namespace": "clrk-system",
        "labels": {"app.kubernetes.io/managed-by": "clrk", "app.kubernetes.io/part-of": "clrk"},
    }
    assert EgressConfig.model_validate_json(merged["data"]["config.json"]) == egress_config(bundle.manifests)


def test_no_parts_give_an_empty_config() -> None:
    assert json.loads(merged_egress_config([])["data"]["config.json"]) == {"agents": {}, "injections": []}
