"""Which sandbox kind to use: bubblewrap where it works here (probed once), else plain."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

from clrk_runtime.sandbox.sandboxes import NOBODY, SandboxKind
from clrk_runtime.settings import RuntimeSettings

__all__ = ["bwrap_works", "choose_backend"]

_log = logging.getLogger(__name__)
_probed: dict[tuple[int, int, bool], bool] = {}


def bwrap_works(uid: int, gid: int, drop_privileges: bool) -> bool:
    """Whether a sandbox like ours starts here (namespaces allowed, bwrap installed). Cached."""
    key = (uid, gid, drop_privileges)
    if key not in _probed:
        _probed[key] = _probe(uid, gid, drop_privileges)
    return _probed[key]


def _probe(uid: int, gid: int, drop_privileges: bool) -> bool:
    if shutil.which("bwrap") is None:
        return False
    argv = ["bwrap", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
    argv += ["--unshare-all", "--die-with-parent", "--uid", str(NOBODY), "--gid", str(NOBODY), "true"]
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            timeout=10,
            check=False,
            user=uid if drop_privileges else None,
            group=gid if drop_privileges else None,
            extra_groups=[] if drop_privileges else None,
            env={"PATH": os.defpath},
        )
    except (OSError, subprocess.SubprocessError):
        return False
    if done.returncode != 0:
        _log.debug("bwrap probe failed: %s", done.stderr.decode(errors="replace").strip())
    return done.returncode == 0


def choose_backend(settings: RuntimeSettings, drop_privileges: bool) -> SandboxKind:
    """The kind for ``settings.sandbox``; ``auto`` falls back to plain with one warning."""
    if settings.sandbox == "plain":
        return "plain"
    works = bwrap_works(settings.sandbox_uid, settings.sandbox_uid, drop_privileges)
    if settings.sandbox == "bwrap":
        if not works:
            raise RuntimeError(
                "--sandbox bwrap: bubblewrap does not work here (is it installed, and are "
                "unprivileged user namespaces allowed?)"
            )
        return "bwrap"
    if not works:
        _log.warning(
            "bubblewrap is unavailable here: falling back to the plain sandbox (fresh dirs, own "
            "session, uid drop, env allow-list) WITHOUT filesystem, pid or network isolation"
        )
        return "plain"
    return "bwrap"
