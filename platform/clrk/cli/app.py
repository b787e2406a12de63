"""The Typer application: each command adapts its options to one core function."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


@app.command()
def version() -> None:
    """Print clrk's version."""
    from clrk import __version__

    typer.echo(__version__)


def main() -> None:
    app()
