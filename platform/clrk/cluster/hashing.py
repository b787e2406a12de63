"""Content-hash tags for build contexts, ko-style: the same files give the same tag anywhere.

The digest covers, in sorted path order, each file's path (relative, ``/``-separated), its kind
and permission bits, and its contents (a symlink: its target). ``.dockerignore`` is honoured as
Docker reads it: Go ``filepath.Match`` patterns plus ``**``, ``!`` re-includes, the last matching
line wins, and a pattern that matches a folder excludes everything under it. Timestamps, owners
and the context's own location do not count, so a fresh clone tags the same as a working copy.
A ``transform`` may rewrite contents first: ``clrk build`` blanks the image pins it writes into
manifests that live inside the context, so that pinning them does not change the next tag.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from clrk.errors import BuildError

__all__ = [
    "Entry",
    "IgnoreRules",
    "Transform",
    "content_digest",
    "context_entries",
    "context_tag",
    "parse_dockerignore",
]


@dataclass(frozen=True)
class Entry:
    path: str
    """Relative to the context, ``/``-separated."""
    mode: int
    """``st_mode``: the file type and permission bits."""
    content: bytes


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif char == "*":
            out, i = out + "[^/]*", i + 1
        elif char == "?":
            out, i = out + "[^/]", i + 1
        elif char == "[":
            end = pattern.find("]", i)
            if end < 0:
                out, i = out + re.escape(char), i + 1
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                out, i = out + "[" + ("^" + body[1:] if body.startswith("!") else body) + "]", end + 1
        else:
            out, i = out + re.escape(char), i + 1
    return re.compile(out + r"\Z")


@dataclass(frozen=True)
class IgnoreRules:
    rules: tuple[tuple[str, bool], ...] = ()
    """``(pattern, excludes)`` in file order; ``excludes`` is False for ``!`` lines."""

    def ignored(self, path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        verdict = False
        for pattern, excludes in self.rules:
            regex = _regex(pattern)
            if any(regex.match(prefix) for prefix in prefixes):
                verdict = excludes
        return verdict


def parse_dockerignore(text: str) -> IgnoreRules:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        excludes = not line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        if pattern and pattern != ".":
            rules.append((pattern, excludes))
    return IgnoreRules(tuple(rules))


def content_digest(entries: Iterable[Entry]) -> str:
    """sha256 (hex) of the entries, independent of the order they are given in."""
    digest = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: e.path):
        kind = "l" if stat.S_ISLNK(entry.mode) else "f"
        bits = stat.S_IMODE(entry.mode) & 0o777
        content = hashlib.sha256(entry.content).hexdigest()
        digest.update(f"{entry.path}\0{kind}{bits:04o}\0{content}\n".encode())
    return digest.hexdigest()


Transform = Callable[[Path, bytes], bytes]
"""Rewrites a file's contents before hashing (``clrk build`` blanks its own image pins)."""


def context_entries(folder: Path, transform: Transform | None = None) -> list[Entry]:
    """The files Docker would send for ``folder`` (the I/O half of hashing)."""
    if not (folder / "Dockerfile").is_file():
        raise BuildError(f"{folder}: no Dockerfile in this build context")
    ignore_file = folder / ".dockerignore"
    rules = parse_dockerignore(ignore_file.read_text(encoding="utf-8")) if ignore_file.is_file() else IgnoreRules()
    entries = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            relative = path.relative_to(folder).as_posix()
            if rules.ignored(relative) and relative != "Dockerfile":
                continue
            info = path.lstat()
            try:
                content = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
            except OSError as exc:
                raise BuildError(f"{path}: cannot read: {exc.strerror}") from None
            if transform is not None and not path.is_symlink():
                content = transform(path, content)
            entries.append(Entry(relative, info.st_mode, content))
    return entries


def context_tag(folder: Path, transform: Transform | None = None) -> str:
    """The image tag for ``folder``: the first 16 hex digits of its content digest."""
    return content_digest(context_entries(folder, transform))[:16]
