"""Raw documents to validated resources: the pure half of reading manifests.

Our kinds (``clrk.dev/*``) become :class:`~clrk.api.TaskAgent` and friends, or a
:class:`~clrk.errors.SpecError` naming the document and the field path. Every other kind (Secret,
ConfigMap, Knative objects…) passes through untouched. Cross-object rules live here too:
duplicates, schedules for unknown agents. Image references that re-apply cannot track are
warnings, not errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from clrk.api import (
    API_GROUP,
    API_VERSION,
    KINDS,
    Caller,
    CredentialInjectionPolicy,
    Resource,
    TaskAgent,
)
from clrk.api.schedules import TaskSchedule
from clrk.errors import SpecError
from clrk.manifests.loading import RawDocument

__all__ = ["Manifests", "field_path", "parse_documents"]


@dataclass(frozen=True)
class Manifests:
    """Everything a set of manifests declares, validated."""

    agents: list[TaskAgent] = field(default_factory=list)
    policies: list[CredentialInjectionPolicy] = field(default_factory=list)
    schedules: list[TaskSchedule] = field(default_factory=list)
    callers: list[Caller] = field(default_factory=list)
    passthrough: list[dict[str, Any]] = field(default_factory=list)
    """Documents of other kinds, exactly as written."""
    sources: dict[str, RawDocument] = field(default_factory=dict)
    """``Kind/namespace/name`` of each of our objects → the document it came from."""
    warnings: list[str] = field(default_factory=list)

    def source_of(self, resource: Resource) -> RawDocument:
        return self.sources[f"{resource.kind}/{resource.ref}"]


def field_path(loc: Sequence[int | str]) -> str:
    """``("spec", "env", 0, "valueFrom")`` → ``spec.env[0].valueFrom``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(error: Any) -> str:
    kind = error["type"]
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind == "missing":
        return "required, but missing"
    if kind == "extra_forbidden":
        return "unknown field (check its spelling and indentation)"
    if kind == "literal_error":
        return f"{error['msg'].lower()}, found {error['input']!r}"
    found = error.get("input")
    shown = repr(found) if not isinstance(found, dict | list) else type(found).__name__
    return f"{error['msg'][0].lower()}{error['msg'][1:]}, found {shown}"


def _validate(doc: RawDocument) -> Resource:
    model = KINDS.get(doc.kind)
    if doc.api_version != API_VERSION:
        raise SpecError(doc.source, "apiVersion", f"expected {API_VERSION!r}, found {doc.api_version!r}")
    if model is None:
        raise SpecError(doc.source, "kind", f"expected one of {', '.join(KINDS)}, found {doc.kind!r}")
    try:
        return model.model_validate(doc.body)
    except ValidationError as exc:
        # Report the first problem precisely; fixing one often clears the rest.
        first = exc.errors()[0]
        raise SpecError(doc.source, field_path(first["loc"]), _describe(first)) from None


def _image_warning(agent: TaskAgent, source: str) -> str | None:
    image = agent.container.image
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    tag = last.partition(":")[2]
    if tag and tag != "latest":
        return None
    what = "has no tag" if not tag else "uses ':latest'"
    return (
        f"{source}: spec.template.spec.image: {image!r} {what}; re-apply only re-rolls the "
        "agent when the image reference changes: tag by content with `clrk build`"
    )


def parse_documents(documents: Iterable[RawDocument]) -> Manifests:
    """Validate our kinds, pass the others through, check references between objects."""
    out = Manifests()
    for doc in documents:
        if doc.api_version.split("/")[0] != API_GROUP:
            out.passthrough.append(doc.body)
            continue
        resource = _validate(doc)
        key = f"{resource.kind}/{resource.ref}"
        if key in out.sources:
            first = out.sources[key].source
            raise SpecError(doc.source, "metadata.name", f"{key} is already defined in {first}")
        out.sources[key] = doc
        if isinstance(resource, TaskAgent):
            out.agents.append(resource)
            warning = _image_warning(resource, doc.source)
            if warning:
                out.warnings.append(warning)
        elif isinstance(resource, CredentialInjectionPolicy):
            out.policies.append(resource)
        elif isinstance(resource, TaskSchedule):
            out.schedules.append(resource)
        elif isinstance(resource, Caller):
            out.callers.append(resource)
    known = {agent.ref for agent in out.agents}
    for schedule in out.schedules:
        target = f"{schedule.metadata.namespace}/{schedule.spec.agent}"
        if target not in known:
            raise SpecError(
                out.source_of(schedule).source,
                "spec.agent",
                f"no TaskAgent {target} in these manifests (known: {', '.join(sorted(known)) or 'none'})",
            )
    return out
