"""``clrk invocations get|result|events|cancel ID``: an async invocation (``clrk invoke --async``),
seen with the same Caller key that started it."""

from __future__ import annotations

from typing import Annotated

import httpx
import typer

from clrk.authoring import DEFAULT_URL, InvocationError, InvokeUsageError, error_line, fetch_usage
from clrk.authoring.following import Followed
from clrk.authoring.tracking import check_invocation_id, document_text, invocations_url, request
from clrk.cli.authoring import follow_events, report

app = typer.Typer(
    name="invocations",
    no_args_is_help=True,
    help="An async invocation (clrk invoke --async): its status, result, events; cancel it.",
)

Id = Annotated[str, typer.Argument(metavar="ID", help="The invocation id `clrk invoke --async` printed.")]
Url = Annotated[str, typer.Option(envvar="CLRK_URL", help="The ingress (a clrk dev, or a cluster's).")]
Key = Annotated[
    str | None, typer.Option(envvar="CLRK_KEY", help="The Caller's key that started it (Authorization: Bearer).")
]


def _target(invocation_id: str, url: str, key: str | None, *rest: str) -> tuple[str, dict[str, str]]:
    try:
        target = invocations_url(url, check_invocation_id(invocation_id), *rest)
    except InvokeUsageError as exc:
        raise typer.BadParameter(exc.message, param_hint=exc.option) from None
    return target, {"Authorization": f"Bearer {key}"} if key else {}


def _document(method: str, invocation_id: str, url: str, key: str | None) -> None:
    target, headers = _target(invocation_id, url, key)
    with httpx.Client() as client:
        answer = request(client, method, target, headers)
    if not answer.ok:
        raise InvocationError(error_line(answer))
    if answer.body:
        typer.echo(document_text(answer.body))


@app.command("get")
def get_(invocation_id: Id, url: Url = DEFAULT_URL, key: Key = None) -> None:
    """Print its status document (JSON): queued, running, succeeded, failed, timed_out or
    cancelled, its times, HTTP status, token use and callback."""
    _document("GET", invocation_id, url, key)


@app.command("result")
def result_(invocation_id: Id, url: Url = DEFAULT_URL, key: Key = None) -> None:
    """Print its answer, as a synchronous call would have had it. Exit status 0 for a 2xx answer,
    else 1 (result_not_ready before it ends, result_expired once dropped)."""
    target, headers = _target(invocation_id, url, key, "result")
    with httpx.Client() as client:
        answer = request(client, "GET", target, headers)
    report(Followed(answer, streamed=False), None, verbose=False)


@app.command("events")
def events_(
    invocation_id: Id,
    url: Url = DEFAULT_URL,
    key: Key = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Status changes; then id, status, time, tokens.")
    ] = False,
) -> None:
    """Print each line of its stdout (from the first) as it is written, until it ends. Exit
    status 0 for a 2xx outcome, else 1."""
    target, headers = _target(invocation_id, url, key, "events")
    with httpx.Client() as client:
        followed = follow_events(client, target, headers, verbose)
        usage = fetch_usage(client, url, followed.result.invocation_id, headers) if verbose else None
    report(followed, usage, verbose)


@app.command("cancel")
def cancel_(invocation_id: Id, url: Url = DEFAULT_URL, key: Key = None) -> None:
    """Cancel it: its sandbox's whole process tree is killed. Prints its status document; exit
    status 1 (already_finished) for one that ended first."""
    _document("DELETE", invocation_id, url, key)
