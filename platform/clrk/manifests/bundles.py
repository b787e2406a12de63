"""A set of manifests with what their build contexts say, ready to compile or to serve.

``load_bundle`` is the I/O shell (files, stdin, Dockerfiles); ``compile_bundle`` and
``entrypoint`` are pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from clrk.api import TaskAgent
from clrk.api.taskagent import ANNOTATION_BUILD_CONTEXT
from clrk.errors import BuildError, SpecError
from clrk.manifests.compiling import ingress_service, knative_service, ping_source
from clrk.manifests.dockerfiles import BuildContext, ImageConfig, read_build_context
from clrk.manifests.loading import load_documents
from clrk.manifests.options import ClusterOptions
from clrk.manifests.parsing import Manifests, parse_documents
from clrk.manifests.policies import egress_configmaps

__all__ = ["Bundle", "compile_bundle", "entrypoint", "load_bundle"]


@dataclass(frozen=True)
class Bundle:
    manifests: Manifests
    contexts: dict[str, BuildContext] = field(default_factory=dict)
    """Build context of each agent that names one, by ``namespace/name``."""

    def argv(self, agent: TaskAgent) -> list[str]:
        context = self.contexts.get(agent.ref)
        return entrypoint(agent, context.image if context else None, self.manifests.source_of(agent).source)


def entrypoint(agent: TaskAgent, image: ImageConfig | None, source: str) -> list[str]:
    """What the shim execs: the manifest's command/args, else the Dockerfile's ENTRYPOINT/CMD
    (``args`` replace CMD, as in Kubernetes)."""
    spec = agent.container
    if spec.command:
        return spec.command + (spec.args or [])
    if image is not None and image.entrypoint + image.cmd:
        return image.entrypoint + (spec.args if spec.args is not None else image.cmd)
    if image is not None:
        raise SpecError(
            source,
            "spec.template.spec.command",
            "required: the Dockerfile has no ENTRYPOINT or CMD",
        )
    raise SpecError(
        source,
        "spec.template.spec.command",
        f"required when there is no {ANNOTATION_BUILD_CONTEXT} annotation to read the Dockerfile's ENTRYPOINT from",
    )


def load_bundle(paths: Iterable[str], stdin: IO[str] | None = None) -> Bundle:
    """Read manifests and the Dockerfiles their agents point at; check every entrypoint."""
    manifests = parse_documents(load_documents(paths, stdin))
    contexts = {}
    for agent in manifests.agents:
        relative = agent.metadata.annotations.get(ANNOTATION_BUILD_CONTEXT)
        if relative is None:
            continue
        doc = manifests.source_of(agent)
        folder = (doc.base_dir / relative).resolve()
        field_name = f"metadata.annotations[{ANNOTATION_BUILD_CONTEXT}]"
        if not folder.is_dir():
            raise SpecError(doc.source, field_name, f"no such folder: {folder}")
        try:
            contexts[agent.ref] = read_build_context(folder)
        except BuildError as exc:
            raise SpecError(doc.source, field_name, str(exc)) from None
    bundle = Bundle(manifests, contexts)
    for agent in manifests.agents:
        bundle.argv(agent)  # fail now, naming the file, rather than at first request
    return bundle


def compile_bundle(bundle: Bundle, options: ClusterOptions | None = None) -> list[dict[str, Any]]:
    """Everything to apply to a cluster: Knative Services, ingress Services, PingSources, the
    egress gateway's ConfigMaps, then the documents of other kinds as they were written."""
    options = options or ClusterOptions()
    manifests = bundle.manifests
    out: list[dict[str, Any]] = []
    for agent in manifests.agents:
        out.append(knative_service(agent, bundle.argv(agent), options))
        out.append(ingress_service(agent))
    out += [ping_source(schedule, options) for schedule in manifests.schedules]
    out += egress_configmaps(manifests)
    out += manifests.passthrough
    return out
