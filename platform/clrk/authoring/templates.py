"""Where the scaffolds for ``clrk new`` are, and what one holds.

From a wheel they are package data (``clrk/_templates``, via pyproject's force-include); from an
editable install or a checkout, the repository's ``templates/`` folder. :func:`templates_dir` is
the one place that knows; :func:`read_template` is the I/O edge that reads one scaffold.
"""

from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TemplateFile", "available_templates", "read_template", "templates_dir"]

_SKIP = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".venv", "node_modules"})


@dataclass(frozen=True, slots=True)
class TemplateFile:
    path: str
    """POSIX path inside the scaffold, e.g. ``manifests/taskagent.yaml``."""
    content: bytes
    executable: bool


def templates_dir() -> Path:
    """The folder holding one sub-folder per template."""
    packaged = importlib.resources.files("clrk") / "_templates"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[3] / "templates"


def available_templates(root: Path | None = None) -> list[str]:
    """Template names: the sub-folders of :func:`templates_dir` (``_``/``.`` ones excluded)."""
    base = root or templates_dir()
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def read_template(folder: Path) -> list[TemplateFile]:
    """Every file of one scaffold, sorted by path; caches and virtualenvs left out."""
    files = []
    for directory, subdirs, names in os.walk(folder):
        subdirs[:] = sorted(d for d in subdirs if d not in _SKIP)
        for name in names:
            path = Path(directory) / name
            if path.is_symlink() or not path.is_file() or name.endswith((".pyc", ".pyo")):
                continue
            executable = bool(path.stat().st_mode & 0o111)
            files.append(TemplateFile(path.relative_to(folder).as_posix(), path.read_bytes(), executable))
    return sorted(files, key=lambda f: f.path)
