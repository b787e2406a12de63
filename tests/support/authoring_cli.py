"""``clrk new`` and ``clrk invoke`` as a user runs them: a throwaway Typer app holding the two
commands, errors reported the way ``clrk.cli.app.main`` reports them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import typer
from typer.testing import CliRunner

from clrk.cli import authoring
from clrk.errors import ClrkError

__all__ = ["Ran", "clrk"]

app = typer.Typer(pretty_exceptions_enable=False)
app.command()(authoring.new)
app.command()(authoring.invoke)


@dataclass(frozen=True)
class Ran:
    exit_code: int
    stdout: str
    stderr: str


def clrk(*args: str, stdin: bytes | None = None, env: Mapping[str, str] | None = None) -> Ran:
    """Run ``clrk ARGS``; a ClrkError ends as ``error: …`` on stderr and exit status 1."""
    result = CliRunner().invoke(app, list(args), input=stdin, env=dict(env or {}))
    stderr = result.stderr
    if isinstance(result.exception, ClrkError):
        return Ran(1, result.stdout, stderr + f"error: {result.exception}\n")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, stderr)
