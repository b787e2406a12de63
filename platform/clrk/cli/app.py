"""The ``clrk`` command line. Commands only adapt options to core functions; this module is
the one place that talks to humans about errors: a :class:`~clrk.errors.ClrkError` becomes one
``error: …`` line and exit status 1, usage errors exit 2, and no user error shows a traceback."""

from __future__ import annotations

import sys

import typer

from clrk import __version__
from clrk.cli import authoring, cluster, dev, manifests
from clrk.cli.egress import egress
from clrk.errors import ClrkError

app = typer.Typer(
    name="clrk",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Run Claude Code (or any agent program) as an internal HTTP service.",
)


@app.command()
def version() -> None:
    """Print clrk's version."""
    typer.echo(__version__)


app.command()(manifests.render)
app.command()(manifests.validate)
app.command()(manifests.crds)
app.command()(dev.dev)
app.command()(dev.doctor)
app.command()(dev.traces)
app.command()(egress)
app.command()(authoring.new)
app.command()(authoring.invoke)
for command in (
    cluster.apply,
    cluster.delete,
    cluster.get,
    cluster.logs,
    cluster.install,
    cluster.build,
    cluster.operator,
    cluster.ingress,
):
    app.command()(command)


def main() -> None:
    try:
        app()
    except ClrkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
