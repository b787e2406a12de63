"""Standalone serving (``clrk egress``): load the config file, run the gateway until stopped.

The config file is JSON of :class:`~clrk.api.egress.EgressConfig` (in a cluster, a mounted
ConfigMap); it is re-read when it changes, so policy updates need no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from clrk.api.egress import EgressConfig
from clrk.egress.gateway import EgressGateway
from clrk.egress.secrets import DirectorySecrets, SecretSource, secrets_from_specs
from clrk.egress.settings import EgressSettings
from clrk.errors import EgressPolicyError

__all__ = ["load_config", "make_secrets", "serve"]

log = logging.getLogger(__name__)

_RELOAD_EVERY_S = 2.0


def load_config(path: Path | None) -> EgressConfig:
    """The config file's :class:`EgressConfig`, or an empty one (nothing allowed) without."""
    if path is None:
        return EgressConfig()
    try:
        return EgressConfig.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise EgressPolicyError(f"{path}: {exc.strerror}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise EgressPolicyError(f"{path}: {where}: {first['msg']}") from None


def make_secrets(settings: EgressSettings, specs: list[str], environ: Mapping[str, str]) -> SecretSource:
    """Mounted Secret files when ``egress_secrets_dir`` is set, else ``--secret`` specs."""
    if settings.egress_secrets_dir is not None:
        if specs:
            raise EgressPolicyError("use either --secret or a secrets directory, not both")
        return DirectorySecrets(settings.egress_secrets_dir)
    return secrets_from_specs(specs, environ)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


async def _watch(gateway: EgressGateway, path: Path) -> None:
    seen = _mtime(path)
    while True:
        await asyncio.sleep(_RELOAD_EVERY_S)
        now = _mtime(path)
        if now == seen:
            continue
        seen = now
        try:
            gateway.update_config(load_config(path))
        except EgressPolicyError as exc:
            log.error("egress config not reloaded, keeping the last good one: %s", exc)
        else:
            log.info("egress config reloaded from %s", path)


async def serve(settings: EgressSettings, secrets: SecretSource, *, stop: asyncio.Event | None = None) -> None:
    """Run a gateway until SIGINT/SIGTERM (or ``stop`` is set)."""
    config = load_config(settings.egress_config_file)
    gateway = EgressGateway(settings, config, secrets)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    port = await gateway.start()
    assert gateway.ca is not None
    log.info("egress: proxy on %s:%d, CA bundle %s", settings.egress_listen_host, port, gateway.ca.bundle)
    watcher = (
        asyncio.create_task(_watch(gateway, settings.egress_config_file))
        if settings.egress_config_file is not None
        else None
    )
    try:
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await gateway.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
