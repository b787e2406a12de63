"""Which tools an agent's image installs, and whether this host has them.

``clrk dev`` runs an agent on the host's filesystem (read-only) instead of building its image, so
what the Dockerfile's RUN lines install must already be here. This reads those lines (apk,
apt-get, dnf/yum, npm -g), names the command each package provides, and looks for it on PATH.
A file a RUN line puts into a bin folder itself (``install … /usr/local/bin/claude``, ``ln -s …``:
how the templates install the pinned Claude CLI from another build stage) counts too, under its
file name. Parsing is pure; :func:`check` is the one lookup on the host.
"""

from __future__ import annotations

import itertools
import posixpath
import re
import shlex
import shutil
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Requirement", "ToolCheck", "check", "requirements"]

_INSTALLERS = {
    ("apk", "add"): "apk",
    ("apt-get", "install"): "apt",
    ("apt", "install"): "apt",
    ("dnf", "install"): "dnf",
    ("yum", "install"): "dnf",
    ("microdnf", "install"): "dnf",
}
# Packages whose command differs from their name; None: a package with no command to look for.
_COMMANDS: dict[str, str | None] = {
    "@anthropic-ai/claude-code": "claude",
    "ca-certificates": None,
    "tzdata": None,
    "coreutils": None,
    "build-base": None,
    "build-essential": None,
    "bubblewrap": "bwrap",
    "nodejs": "node",
    "python3-pip": "pip3",
    "py3-pip": "pip3",
    "ripgrep": "rg",
    "openssh-client": "ssh",
    "gnupg": "gpg",
    "procps": "ps",
    "iproute2": "ip",
    "netcat-openbsd": "nc",
}
_SPLIT = re.compile(r"&&|\|\||;|\|")
_PREFIX = re.compile(r"^(--[a-z-]+=.*|[A-Za-z_][A-Za-z0-9_]*=.*)$")
"""Words before the command: RUN's own flags (``--mount=…``) and environment assignments."""
_REDIRECTION = re.compile(r"^[0-9]*[<>]")
_BIN_FILE = re.compile(r"^/(usr/(local/)?)?s?bin/[^/]+$")
"""A file in one of the folders every image's PATH holds."""
_PLACERS = {"install", "ln", "cp", "mv"}


@dataclass(frozen=True, slots=True)
class Requirement:
    command: str
    package: str
    installer: str


@dataclass(frozen=True, slots=True)
class ToolCheck:
    requirement: Requirement
    found: str | None
    """Where the command is on this host, or None."""


def _package_name(word: str, installer: str) -> str:
    if installer == "npm":
        scoped = word.startswith("@")
        name = word[1:].split("@", 1)[0] if scoped else word.split("@", 1)[0]
        return "@" + name if scoped else name
    return re.split(r"[=<>~]", word, maxsplit=1)[0]


def _command_for(package: str, installer: str) -> str | None:
    if package in _COMMANDS:
        return _COMMANDS[package]
    if package.startswith("lib") or package.endswith(("-dev", "-devel", "-doc")):
        return None
    return package.rsplit("/", 1)[-1] if installer == "npm" else package


def requirements(run_lines: Iterable[str]) -> list[Requirement]:
    """Commands the RUN lines install, in order, each once."""
    out: dict[str, Requirement] = {}
    for line in run_lines:
        for segment in _SPLIT.split(line.replace("\\\n", " ")):
            try:
                words = shlex.split(segment)
            except ValueError:
                continue
            while words and _PREFIX.match(words[0]):
                words.pop(0)
            words = list(itertools.takewhile(lambda w: not _REDIRECTION.match(w), words))
            if len(words) < 2:
                continue
            if words[0] in _PLACERS and _BIN_FILE.match(words[-1]):
                placed = posixpath.basename(words[-1])
                out.setdefault(placed, Requirement(placed, words[-1], words[0]))
                continue
            installer = _INSTALLERS.get((words[0], words[1]))
            if words[0] == "npm" and words[1] in ("install", "i") and ("-g" in words or "--global" in words):
                installer = "npm"
            if installer is None:
                continue
            for word in words[2:]:
                if word.startswith("-"):
                    continue
                package = _package_name(word, installer)
                command = _command_for(package, installer)
                if command and command not in out:
                    out[command] = Requirement(command, package, installer)
    return list(out.values())


def check(reqs: Iterable[Requirement], path: str | None = None) -> list[ToolCheck]:
    """Look each command up on ``path`` (the host's PATH by default)."""
    return [ToolCheck(req, shutil.which(req.command, path=path)) for req in reqs]
