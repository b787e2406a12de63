"""``clrk render``, ``clrk validate``, ``clrk crds``: manifests in, YAML or a verdict out."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from clrk.api.crds import all_crds
from clrk.cli.options import settings_from
from clrk.manifests import Bundle, compile_bundle, load_bundle
from clrk.manifests.documents import dump_all
from clrk.manifests.options import PlatformSettings

PathsOption = Annotated[
    list[str],
    typer.Option(
        "--filename",
        "-f",
        help="A manifest file, a folder (searched recursively for *.yaml/*.yml) or - for stdin. Repeatable.",
    ),
]

RuntimeImage = Annotated[
    str | None,
    typer.Option(
        "--runtime-image",
        help="Image copied into agent pods [$CLRK_RUNTIME_IMAGE; ghcr.io/clrk-dev/clrk-runtime:VERSION].",
    ),
]
ClusterDomain = Annotated[
    str | None,
    typer.Option(
        "--cluster-domain",
        help="The cluster's DNS domain [$CLRK_CLUSTER_DOMAIN; cluster.local].",
    ),
]


def dump_yaml(objects: list[dict[str, Any]]) -> str:
    return dump_all(objects)


def _load(paths: list[str]) -> Bundle:
    bundle = load_bundle(paths, stdin=sys.stdin)
    for warning in bundle.manifests.warnings:
        typer.echo(f"warning: {warning}", err=True)
    return bundle


def render(filename: PathsOption, runtime_image: RuntimeImage = None, cluster_domain: ClusterDomain = None) -> None:
    """Print the Kubernetes objects the manifests compile to (like `kubectl kustomize`), then
    what `clrk apply` puts into each agent namespace (its keys Secret without data: apply derives
    the keys from the cluster's platform key), and the ingress's Role on the Secrets Callers name.
    A PingSource's sink URL ends in TOKEN-FILLED-IN-AT-APPLY: apply writes its agent's schedule
    token there, from the platform key."""
    from clrk.cluster.configs import rendered_namespace_objects
    from clrk.cluster.grants import rendered_caller_access

    options = settings_from(PlatformSettings, runtime_image=runtime_image, cluster_domain=cluster_domain).options()
    bundle = _load(filename)
    namespaces = {agent.metadata.namespace for agent in bundle.manifests.agents}
    objects = [*compile_bundle(bundle, options), *rendered_namespace_objects(namespaces, options)]
    objects += rendered_caller_access(bundle.manifests.callers)
    typer.echo(dump_yaml(objects), nl=False)


def validate(filename: PathsOption) -> None:
    """Check manifests without a cluster: schema, references, entrypoints, warnings; and note the
    limits an agent is within but may not expect (a spec.timeout only async calls may use)."""
    from clrk.manifests.limits import limit_notes

    manifests = _load(filename).manifests
    for note in limit_notes(manifests.agents):
        typer.echo(f"note: {note}", err=True)
    counts = (
        f"{len(manifests.agents)} TaskAgent(s), {len(manifests.policies)} "
        f"CredentialInjectionPolicy(ies), {len(manifests.schedules)} TaskSchedule(s), "
        f"{len(manifests.passthrough)} other object(s)"
    )
    typer.echo(f"ok: {counts}")


def crds() -> None:
    """Print clrk's CustomResourceDefinitions, generated from its models."""
    typer.echo(dump_yaml(all_crds()), nl=False)
