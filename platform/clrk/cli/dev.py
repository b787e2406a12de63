"""``clrk dev``, ``clrk doctor``, ``clrk traces``: the embedded mode on this machine."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Literal

import httpx
import typer

from clrk.cli.options import settings_from
from clrk.dev.doctor import check, requirements
from clrk.dev.settings import DevSettings
from clrk.errors import ClrkError
from clrk.manifests import load_bundle
from clrk_runtime.protocol.routes import TRACES_PATH


def agent_path() -> str:
    """The host's PATH, with clrk's own bin folder first (where `make install` links the pinned
    Claude CLI), so agents find the same tools as the user's shell."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")])


def dev(
    apply: Annotated[
        list[str],
        typer.Option("--apply", help="Manifests to serve: a file or folder (repeatable)."),
    ],
    secret: Annotated[
        list[str] | None,
        typer.Option("--secret", help="NAME=ENVVAR:KEY: key KEY of Secret NAME is $ENVVAR (repeatable)."),
    ] = None,
    port: Annotated[int | None, typer.Option(help="Ingress port [18080]; 0 picks a free one.")] = None,
    host: Annotated[str | None, typer.Option(help="Ingress address [127.0.0.1].")] = None,
    auth: Annotated[
        Literal["auto", "open", "keys"] | None,
        typer.Option(help="Caller authentication; auto = open on loopback, keys elsewhere."),
    ] = None,
    state_dir: Annotated[Path | None, typer.Option(help="CA, budgets and logs [~/.clrk].")] = None,
    sandbox: Annotated[
        Literal["auto", "bwrap", "plain"] | None,
        typer.Option(help="Sandbox kind [auto: bwrap where it works]."),
    ] = None,
    egress_upstream: Annotated[
        list[str] | None,
        typer.Option(help="Test seam HOST:PORT=ADDR:PORT, TLS still verified (repeatable)."),
    ] = None,
    egress_upstream_ca: Annotated[Path | None, typer.Option(help="Extra CA for upstream TLS.")] = None,
    async_retention: Annotated[
        str | None,
        typer.Option(help="How long finished async invocations and their results are kept [24h]."),
    ] = None,
    no_tui: Annotated[bool, typer.Option("--no-tui", help="Plain log lines even on a terminal.")] = False,
) -> None:
    """Serve agents on this machine: ingress, one sandbox per request, the egress gateway."""
    settings = settings_from(
        DevSettings,
        apply=apply,
        secrets=secret,
        port=port,
        host=host,
        auth=auth,
        state_dir=state_dir,
        sandbox=sandbox,
        egress_upstreams=egress_upstream,
        egress_upstream_ca=egress_upstream_ca,
        async_retention=async_retention,
        agent_path=agent_path(),
    )
    from clrk.dev.running import run_dev  # the gateway (mitmproxy) is heavy: import it only here

    asyncio.run(run_dev(settings, os.environ, tui=sys.stdout.isatty() and not no_tui))


def doctor(
    filename: Annotated[list[str], typer.Option("--filename", "-f", help="Manifests (file, folder or -).")],
) -> None:
    """List the tools the agents' Dockerfiles install and whether this host has them."""
    from clrk.dev.serving import missing_tools

    bundle = load_bundle(filename, stdin=sys.stdin)
    path = agent_path()
    for ref, context in sorted(bundle.contexts.items()):
        typer.echo(f"{ref} ({context.path / 'Dockerfile'}):")
        for result in check(requirements(context.image.run), path=path):
            req = result.requirement
            where = result.found or "MISSING"
            typer.echo(f"  {req.command:<12} {where:<40} ({req.package}, {req.installer})")
    missing = missing_tools(bundle, path)
    if missing:
        raise ClrkError(f"{len(missing)} tool(s) missing on this host: " + "; ".join(missing))


def traces(
    invocation: Annotated[str | None, typer.Option(help="Only the trace of this invocation id.")] = None,
    url: Annotated[str, typer.Option(help="The running clrk dev.")] = "http://127.0.0.1:18080",
    as_json: Annotated[bool, typer.Option("--json", help="Raw JSON.")] = False,
    key: Annotated[
        str | None, typer.Option(envvar="CLRK_KEY", help="A Caller's key: its own invocations' spans.")
    ] = None,
) -> None:
    """Print recent traces from a running `clrk dev` (with Callers required: a Caller's own)."""
    params = {"invocation": invocation} if invocation else {}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(url.rstrip("/") + TRACES_PATH, params=params, headers=headers, timeout=5)
    except httpx.HTTPError as exc:
        raise ClrkError(f"{url}: no clrk dev answers there ({type(exc).__name__}); start one with `clrk dev`") from None
    if response.status_code in (401, 403):
        raise ClrkError(f"{url}{TRACES_PATH}: HTTP {response.status_code}: give a Caller's key with --key or CLRK_KEY")
    if response.status_code != 200:
        raise ClrkError(f"{url}{TRACES_PATH}: HTTP {response.status_code}")
    spans = response.json()["spans"]
    if as_json:
        typer.echo(json.dumps(spans, indent=2))
        return
    for span in sorted(spans, key=lambda s: s["start"], reverse=True):
        attrs = span["attributes"]
        typer.echo(f"{span['traceId'][:8]} {span['name']:<28} {span['durationMs']:9.1f} ms  {span['status']}")
        for key in sorted(attrs):
            typer.echo(f"    {key} = {attrs[key]}")
