"""The ``clrk`` command line. Commands only adapt options to core functions; this module is
the one place that talks to humans about errors: a :class:`~clrk.errors.ClrkError` becomes one
``error: …`` line and exit status 1, usage errors exit 2, and no user error shows a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer

from clrk import __version__
from clrk.cli import authoring, cluster, dev, invocations, manifests
from clrk.cli.egress import egress
from clrk.errors import ClrkError

app = typer.Typer(
    name="clrk",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Run Claude Code (or any agent program) as an internal HTTP service.",
)


def version() -> None:
    """Print clrk's version."""
    typer.echo(__version__)


PANELS: dict[str, list[Callable[..., None]]] = {
    "On this machine": [dev.dev, dev.doctor, dev.traces, authoring.invoke],
    "Writing agents": [authoring.new, manifests.validate, manifests.render, manifests.crds],
    "On a cluster": [
        cluster.install,
        cluster.apply,
        cluster.get,
        cluster.logs,
        cluster.delete,
        cluster.build,
        cluster.operator,
    ],
    "Pieces, as the cluster runs them": [cluster.ingress, egress, version],
}
for panel, commands in PANELS.items():
    for command in commands:
        app.command(rich_help_panel=panel)(command)
app.add_typer(invocations.app, rich_help_panel="On this machine")


def main() -> None:
    try:
        app()
    except ClrkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
