"""``clrk new`` and ``clrk invoke``: fork a template into a new agent; call an agent (buffered,
followed as it runs, or async)."""

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
    TokenUsage,
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
from clrk.authoring.following import Followed, follow
from clrk.authoring.invoking import TIMEOUT, auth_headers, mode_headers, post_headers
from clrk.authoring.tracking import accepted_id, invocations_url, status_line

TEMPLATES_HELP = "jq-bot, shell, python, node or claude-stream."


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
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="Print each line of the agent's stdout as it is written.")
    ] = False,
    respond_async: Annotated[
        bool, typer.Option("--async", help="Answered at once: print the invocation id; it runs on (up to 1 h).")
    ] = False,
    callback_url: Annotated[
        str | None, typer.Option("--callback-url", help="With --async: where the signed CloudEvent goes at the end.")
    ] = None,
) -> None:
    """Call an agent once; print its answer. Exit status 0 for a 2xx answer, else 1.

    With --follow, each line of its stdout is printed as the agent writes it. With --async, the
    invocation id is printed at once (`clrk invocations --help`: its status, result, events);
    --async --follow prints the id on stderr, then follows its events."""
    try:
        extra = {"Authorization": f"Bearer {key}"} if key else {}
        extra.update(parse_header(h) for h in header or [])
        extra.update(mode_headers(follow=follow_, respond_async=respond_async, callback_url=callback_url))
        request = InvocationRequest(url, agent_ref(name, namespace), load_data(data, sys.stdin.buffer), extra)
    except InvokeUsageError as exc:
        raise typer.BadParameter(exc.message, param_hint=exc.option) from None
    with httpx.Client() as client:
        followed = _call(client, request, follow_=follow_, respond_async=respond_async, verbose=verbose)
        if followed is None:
            return
        usage = fetch_usage(client, url, followed.result.invocation_id, extra) if verbose else None
    report(followed, usage, verbose)


def _call(
    client: httpx.Client, request: InvocationRequest, *, follow_: bool, respond_async: bool, verbose: bool
) -> Followed | None:
    """The call as the options ask; None once an async invocation's id is printed."""
    if not respond_async and follow_:
        url = request.url.rstrip("/") + "/"
        headers = post_headers(request)
        return follow(client, "POST", url, headers=headers, body=request.body, on_output=print_line, timeout=TIMEOUT)
    followed = Followed(send(request, client), streamed=False)
    invocation = accepted_id(followed.result) if respond_async else None
    if invocation is None:  # a plain call, or an ingress that did not take it async (an error)
        return followed
    if not follow_:
        typer.echo(invocation)
        return None
    typer.echo(f"invocation: {invocation}", err=True)
    return follow_events(client, invocations_url(request.url, invocation, "events"), request.headers, verbose)


def print_line(line: str) -> None:
    """One ``output`` event: printed at once (``echo`` flushes)."""
    typer.echo(line)


def follow_events(client: httpx.Client, events_url: str, headers: dict[str, str], verbose: bool) -> Followed:
    """``GET /invocations/<id>/events``, the Caller's key sent along; ``status`` events on stderr
    with ``verbose``."""
    return follow(
        client,
        "GET",
        events_url,
        headers=auth_headers(headers),
        on_output=print_line,
        on_status=(lambda document: typer.echo(status_line(document), err=True)) if verbose else None,
    )


def report(followed: Followed, usage: TokenUsage | None, verbose: bool) -> None:
    """The end of a call: the ``--verbose`` lines, the body of a plain answer (an error body of
    clrk's own is said once, as the error line), and :class:`InvocationError` for a non-2xx."""
    result = followed.result
    for line in summary(result, usage) if verbose else []:
        typer.echo(line, err=True)
    if not followed.streamed and (result.ok or not is_error_body(result.body)):
        typer.echo(result.body, nl=False)
    if not result.ok:
        raise InvocationError(error_line(result))
