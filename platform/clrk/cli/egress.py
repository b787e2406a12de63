"""``clrk egress``: run the egress gateway on its own (a cluster Deployment, or by hand)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from opentelemetry import trace

from clrk.cli.options import log_to_stderr, settings_from
from clrk.egress.secrets import StaticSecrets
from clrk.egress.settings import EgressSettings, parse_hostport
from clrk.telemetry.redaction import SecretScrubber
from clrk.telemetry.spans import configure_tracing


def egress(
    config: Annotated[Path | None, typer.Option("--config", help="EgressConfig JSON (re-read on change).")] = None,
    listen: Annotated[str | None, typer.Option("--listen", help="HOST:PORT to listen on [127.0.0.1:8899].")] = None,
    state_dir: Annotated[Path | None, typer.Option("--state-dir", help="State directory [~/.clrk].")] = None,
    secret: Annotated[
        list[str] | None,
        typer.Option("--secret", help="NAME=ENVVAR:KEY: key KEY of secret NAME is $ENVVAR."),
    ] = None,
    secrets_dir: Annotated[
        Path | None, typer.Option("--secrets-dir", help="Mounted Secrets: DIR/NAME/KEY files.")
    ] = None,
    token_key_file: Annotated[Path | None, typer.Option("--token-key-file", help="Shared proxy-token key.")] = None,
    redis_url: Annotated[str | None, typer.Option("--redis-url", help="Keep budgets in Redis (replicas).")] = None,
    upstream: Annotated[
        list[str] | None,
        typer.Option("--egress-upstream", help="Test seam HOST:PORT=ADDR:PORT (repeatable)."),
    ] = None,
    upstream_ca: Annotated[Path | None, typer.Option("--egress-upstream-ca", help="Extra CA for upstream TLS.")] = None,
) -> None:
    """Run the egress gateway: allow-lists, key injection, token budgets, model-call spans."""
    listen_host, listen_port = parse_hostport(listen, "--listen") if listen is not None else (None, None)
    settings = settings_from(
        EgressSettings,
        egress_config_file=config,
        egress_listen_host=listen_host,
        egress_listen_port=listen_port,
        state_dir=state_dir,
        egress_secrets_dir=secrets_dir,
        egress_token_key_file=token_key_file,
        egress_redis_url=redis_url,
        egress_upstreams=upstream or None,
        egress_upstream_ca=upstream_ca,
    )
    from clrk.egress.serving import make_secrets, serve  # mitmproxy is heavy: import it only here

    secrets = make_secrets(settings, secret or [], os.environ)
    log_to_stderr()
    if isinstance(secrets, StaticSecrets):  # defence in depth: no value in any log line
        for handler in logging.getLogger().handlers:
            handler.addFilter(SecretScrubber(secrets.values()))
    provider, _ = configure_tracing("clrk-egress", os.environ)
    trace.set_tracer_provider(provider)
    try:
        asyncio.run(serve(settings, secrets))
    finally:
        provider.shutdown()
