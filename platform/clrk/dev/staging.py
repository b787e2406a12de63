"""Stage what agents read from the host, where the sandbox's user can read it.

When ``clrk dev`` runs as root, agents run as uid 65534, which cannot enter a home folder or a
0700 temp folder: the build context's COPY sources and the egress gateway's CA bundle are copied
into one world-readable folder per start or reload (code and public certificates only, never a
secret), and bound or pointed at from there. Copying also means an agent never sees a half-saved
file while its author edits it: edits arrive with the reload they trigger.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from clrk.dev.agents import copy_binds
from clrk.manifests import Bundle

__all__ = ["Stage", "stage_bundle"]


def _readable(path: Path) -> None:
    """``a+rX`` on ``path`` and everything below it."""
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        mode = item.stat().st_mode
        extra = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
        if item.is_dir() or mode & stat.S_IXUSR:
            extra |= stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
        item.chmod(stat.S_IMODE(mode) | extra)


class Stage:
    """One staged copy: ``binds[agent ref]`` maps destinations to staged sources."""

    def __init__(self, root: Path, binds: dict[str, dict[str, str]], ca_bundle: Path) -> None:
        self.root, self.binds, self.ca_bundle = root, binds, ca_bundle

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


_STAGE_PARENT = "/var/tmp"  # noqa: S108 - not /tmp: bubblewrap sandboxes get their own /tmp, hiding the host's


def stage_bundle(bundle: Bundle, ca_bundle: Path) -> Stage:
    parent = _STAGE_PARENT if os.path.isdir(_STAGE_PARENT) else None
    root = Path(tempfile.mkdtemp(prefix="clrk-dev-", dir=parent))
    try:
        root.chmod(0o755)
        binds: dict[str, dict[str, str]] = {}
        for ref, context in bundle.contexts.items():
            agent_root = root / ref.replace("/", os.sep)
            staged = {}
            for destination, source in copy_binds(context).items():
                target = agent_root / destination.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                if Path(source).is_dir():
                    shutil.copytree(source, target, symlinks=False)
                else:
                    shutil.copy2(source, target)
                staged[destination] = str(target)
            if agent_root.exists():
                _readable(agent_root)
            binds[ref] = staged
        staged_ca = root / "ca-bundle.pem"
        shutil.copyfile(ca_bundle, staged_ca)
        staged_ca.chmod(0o644)
        return Stage(root, binds, staged_ca)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
