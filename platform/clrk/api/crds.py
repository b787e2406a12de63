"""CustomResourceDefinitions generated from the pydantic models.

Pydantic's JSON schema is turned into a Kubernetes structural OpenAPI v3 schema: references
inlined, titles dropped, ``X | None`` written as ``nullable``, free-form data marked
``x-kubernetes-preserve-unknown-fields``. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from clrk.api.callers import Caller
from clrk.api.common import API_GROUP, Resource
from clrk.api.policies import CredentialInjectionPolicy
from clrk.api.schedules import TaskSchedule
from clrk.api.taskagent import TaskAgent

__all__ = ["all_crds", "crd_filename", "crd_for"]

_NAMES: dict[type[Resource], tuple[str, str, list[str]]] = {
    TaskAgent: ("taskagents", "taskagent", ["ta"]),
    CredentialInjectionPolicy: (
        "credentialinjectionpolicies",
        "credentialinjectionpolicy",
        ["cip"],
    ),
    TaskSchedule: ("taskschedules", "taskschedule", ["ts"]),
    Caller: ("callers", "caller", []),
}

_DROP = {"title", "default", "x-clrk-forbidden"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        return _structural({**target, **{k: v for k, v in node.items() if k != "$ref"}}, defs)
    any_of = node.get("anyOf")
    if any_of is not None:
        kinds = [option for option in any_of if option.get("type") != "null"]
        if len(kinds) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            merged = _structural({**kinds[0], **rest}, defs)
            if len(kinds) != len(any_of):
                merged["nullable"] = True
            return merged
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or key == "$defs":
            continue
        if key == "exclusiveMinimum":
            # JSON Schema's number form; Kubernetes speaks OpenAPI 3.0's boolean form.
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "properties":
            out[key] = {name: _structural(prop, defs) for name, prop in value.items()}
        else:
            out[key] = _structural(value, defs)
    if out.get("x-kubernetes-preserve-unknown-fields") or (
        "type" not in out and "properties" not in out and "items" not in out
    ):
        # Free-form JSON (the forbidden valueFrom): any value is kept as-is; a free-form object
        # (TaskSchedule data) stays an object, whatever its keys.
        kept = ("object",) if out.get("type") == "object" else ()
        out = {k: v for k, v in out.items() if k not in ("nullable", "additionalProperties")}
        if out.get("type") not in kept:
            out.pop("type", None)
        out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("type") == "object" and "properties" in out and "additionalProperties" in out:
        out.pop("additionalProperties")
    return out


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema: dict[str, Any] = _structural(raw, raw.get("$defs", {}))
    props = schema["properties"]
    # apiVersion, kind and metadata belong to the API server, not to our schema.
    for key in ("apiVersion", "kind", "metadata"):
        props.pop(key, None)
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    props["metadata"] = {"type": "object"}
    props["status"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    schema["required"] = ["spec"]
    return schema


def crd_for(model: type[Resource]) -> dict[str, Any]:
    """The CustomResourceDefinition (apiextensions.k8s.io/v1) for one of our kinds."""
    plural, singular, short = _NAMES[model]
    kind = model.model_fields["kind"].default
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{API_GROUP}",
            "labels": {"app.kubernetes.io/part-of": "clrk"},
        },
        "spec": {
            "group": API_GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                **({"shortNames": short} if short else {}),
                "categories": ["clrk"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": _schema(model)},
                    "subresources": {"status": {}},
                }
            ],
        },
    }


def all_crds() -> list[dict[str, Any]]:
    """Every CRD clrk installs, in a stable order."""
    return [crd_for(model) for model in _NAMES]


def crd_filename(crd: dict[str, Any]) -> str:
    """``clrk.dev_taskagents.yaml``: the name each CRD has under ``platform/config/crds``."""
    group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
    return f"{group}_{plural}.yaml"
