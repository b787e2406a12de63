"""``clrk render``, ``clrk validate``, ``clrk crds``: manifests in, YAML or a verdict out."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from clrk.api.crds import all_crds
from clrk.manifests import Bundle, compile_bundle, load_bundle
from clrk.manifests.documents import dump_all

PathsOption = Annotated[
    list[str],
    typer.Option(
        "--filename",
        "-f",
        help="A manifest file, a folder (searched recursively for *.yaml/*.yml) or - for stdin. Repeatable.",
    ),
]


def dump_yaml(objects: list[dict[str, Any]]) -> str:
    return dump_all(objects)


def _load(paths: list[str]) -> Bundle:
    bundle = load_bundle(paths, stdin=sys.stdin)
    for warning in bundle.manifests.warnings:
        typer.echo(f"warning: {warning}", err=True)
    return bundle


def render(filename: PathsOption) -> None:
    """Print the Kubernetes objects the manifests compile to (like `kubectl kustomize`)."""
    typer.echo(dump_yaml(compile_bundle(_load(filename))), nl=False)


def validate(filename: PathsOption) -> None:
    """Check manifests without a cluster: schema, references, entrypoints, warnings."""
    manifests = _load(filename).manifests
    counts = (
        f"{len(manifests.agents)} TaskAgent(s), {len(manifests.policies)} "
        f"CredentialInjectionPolicy(ies), {len(manifests.schedules)} TaskSchedule(s), "
        f"{len(manifests.passthrough)} other object(s)"
    )
    typer.echo(f"ok: {counts}")


def crds() -> None:
    """Print clrk's CustomResourceDefinitions, generated from its models."""
    typer.echo(dump_yaml(all_crds()), nl=False)
