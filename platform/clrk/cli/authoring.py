"""``clrk new`` and ``clrk invoke``: fork a template into a new agent; call an agent."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import httpx
import typer

from clrk.authoring import (
    DEFAULT_URL,
    InvocationError,
    InvocationRequest,
    InvokeUsageError,
    ScaffoldError,
    agent_ref,
    create_fork,
    error_line,
    fetch_usage,
    is_error_body,
    load_data,
    next_steps,
    parse_header,
    send,
    summary,
)

TEMPLATES_HELP = "jq-bot, shell, python or node."


def new(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The agent's name: a DNS label, e.g. my-bot.")],
    template: Annotated[str, typer.Option("--template", "-t", help=f"The scaffold: {TEMPLATES_HELP}")] = "shell",
    directory: Annotated[Path | None, typer.Option("--dir", help="Where to write the fork [./NAME].")] = None,
) -> None:
    """Fork a template into a new agent: Dockerfile, entrypoint, manifests, README and a test."""
    try:
        fork = create_fork(name, template, directory or Path(name))
    except ScaffoldError as exc:
        if exc.option is None:
            raise
        raise typer.BadParameter(exc.message, param_hint=exc.option) from None
    typer.echo("\n".join(next_steps(fork, Path.cwd())))


def invoke(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The agent: NAME or NAMESPACE/NAME.")],
    data: Annotated[str, typer.Option("--data", "-d", help="The JSON body: JSON text, @FILE, or - for stdin.")] = "{}",
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="The agent's namespace.")] = "default",
    url: Annotated[
        str, typer.Option(envvar="CLRK_URL", help="The ingress (a clrk dev, or a cluster's).")
    ] = DEFAULT_URL,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Invocation id, status, time, tokens.")] = False,
    header: Annotated[list[str] | None, typer.Option("--header", "-H", help="NAME:VALUE (repeatable).")] = None,
    key: Annotated[
        str | None, typer.Option(envvar="CLRK_KEY", help="A Caller's key, sent as Authorization: Bearer.")
    ] = None,
) -> None:
    """Call an agent once; print its answer. Exit status 0 for a 2xx answer, else 1."""
    try:
        extra = {"Authorization": f"Bearer {key}"} if key else {}
        extra.update(parse_header(h) for h in header or [])
        request = InvocationRequest(url, agent_ref(name, namespace), load_data(data, sys.stdin.buffer), extra)
    except InvokeUsageError as exc:
        raise typer.BadParameter(exc.message, param_hint=exc.option) from None
    with httpx.Client() as client:
        result = send(request, client)
        usage = fetch_usage(client, url, result.invocation_id, request.headers) if verbose else None
    for line in summary(result, usage) if verbose else []:
        typer.echo(line, err=True)
    if result.ok or not is_error_body(result.body):
        typer.echo(result.body, nl=False)
    if not result.ok:
        raise InvocationError(error_line(result))
