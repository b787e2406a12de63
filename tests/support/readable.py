"""Test agents the sandbox's user can reach, wherever the checkout lies.

Run as root, the shim starts agents as unprivileged uids, which cannot enter a checkout inside a 0700
folder (``mktemp -d``, ``/root``). ``tests/agents`` is then copied, once per test process, into a
world-readable folder under /var/tmp (removed at exit); otherwise it is used in place.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import stat
import tempfile
from pathlib import Path

__all__ = ["AGENTS_SOURCE", "agents_dir", "reachable_by_others"]

AGENTS_SOURCE = Path(__file__).resolve().parents[1] / "agents"


def reachable_by_others(path: Path) -> bool:
    """Whether a user who is neither owner nor group can search every folder down to ``path``."""
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.resolve().parents) and bool(
        path.stat().st_mode & stat.S_IXOTH
    )


@functools.cache
def agents_dir() -> Path:
    if os.geteuid() != 0 or reachable_by_others(AGENTS_SOURCE):
        return AGENTS_SOURCE
    root = Path(tempfile.mkdtemp(prefix="clrk-test-agents-", dir="/var/tmp"))
    root.chmod(0o755)
    atexit.register(shutil.rmtree, root, True)
    copy = root / "agents"
    shutil.copytree(AGENTS_SOURCE, copy)
    for item in [copy, *copy.rglob("*")]:
        item.chmod(0o755 if item.is_dir() or item.stat().st_mode & stat.S_IXUSR else 0o644)
    return copy
