"""Stage what agents read from the host, where the sandbox's user can read it.

When ``clrk dev`` runs as root, agents run as unprivileged uids, which cannot enter a home folder or a
0700 temp folder: the build context's COPY sources, the egress gateway's CA bundle and the tools
the image installs that the host keeps out of that user's reach (the pinned Claude CLI inside a
checkout under /root) are put into one world-readable folder per start or reload (code, tools
and public certificates only, never a secret), and bound or pointed at from there. Copying also
means an agent never sees a half-saved file while its author edits it: edits arrive with the
reload they trigger.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

from clrk.dev.agents import copy_binds
from clrk.dev.doctor import requirements
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


def reachable_by_others(path: Path) -> bool:
    """Whether a user that is neither owner nor group may search every folder down to ``path``
    and run it (what an agent's uid needs to use a tool)."""
    real = path.resolve()
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in real.parents) and bool(
        real.stat().st_mode & stat.S_IXOTH
    )


def _tool(command: str, agent_path: str) -> str | None:
    """Where ``command`` is to be taken from for agents, or None when they need no copy of it.

    In clrk's own bin folder (where ``make install`` links the pinned Claude CLI), when it leads
    the agents' PATH: that one, as it is what clrk pins (but never clrk's own interpreter, a
    virtualenv's ``python3``, whose copy would not find its libraries). Elsewhere on PATH: the
    first one, unless the sandbox user can run one further along, which its shell then finds (a
    copy of an interpreter or of a pyenv shim would not work)."""
    folders = [folder for folder in agent_path.split(os.pathsep) if folder]
    own_bin, own = str(Path(sys.executable).parent), Path(sys.executable).resolve()
    if own_bin in folders:
        pinned = shutil.which(command, path=own_bin)
        if pinned is not None and Path(pinned).resolve() != own:
            return None if reachable_by_others(Path(pinned)) else pinned
    hits = [hit for folder in folders if folder != own_bin and (hit := shutil.which(command, path=folder))]
    if not hits or any(reachable_by_others(Path(hit)) for hit in hits):
        return None
    return hits[0]


def _stage_tools(commands: list[str], agent_path: str, bin_dir: Path) -> bool:
    """Put the tools the agents' images install, where the host has them out of the sandbox
    user's reach (a checkout in /root or another 0700 folder), into ``bin_dir``: hard-linked
    when the file system allows, else copied (which one: :func:`_tool`). True when any was
    staged."""
    staged = False
    for command in dict.fromkeys(commands):  # several agents often need the same tool
        found = _tool(command, agent_path)
        if found is None:
            continue
        bin_dir.mkdir(exist_ok=True)
        target = bin_dir / command
        source = Path(found).resolve()
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
        target.chmod(0o755)
        staged = True
    return staged


class Stage:
    """One staged copy: ``binds[agent ref]`` maps destinations to staged sources; ``path`` is the
    PATH agents get (with the staged tools' folder first when there are any)."""

    def __init__(self, root: Path, binds: dict[str, dict[str, str]], ca_bundle: Path, path: str) -> None:
        self.root, self.binds, self.ca_bundle, self.path = root, binds, ca_bundle, path

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


_STAGE_PARENT = "/var/tmp"  # noqa: S108 - not /tmp: bubblewrap sandboxes get their own /tmp, hiding the host's


def stage_bundle(bundle: Bundle, ca_bundle: Path, agent_path: str, *, other_user: bool) -> Stage:
    """``other_user``: agents run as another uid than this process (clrk dev runs as root)."""
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
        path = agent_path
        commands = [r.command for c in bundle.contexts.values() for r in requirements(c.image.run)]
        if other_user and _stage_tools(commands, agent_path, root / "bin"):
            path = f"{root / 'bin'}{os.pathsep}{agent_path}"
        return Stage(root, binds, staged_ca, path)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
