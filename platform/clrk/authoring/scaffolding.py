"""``clrk new``: a fork of a template, with the agent's name put in place.

Pure: :func:`check_name` and :func:`render_fork` (template files in, fork files out). The I/O
shell is :func:`create_fork`, which refuses to write over anything or inside clrk's own checkout,
and writes the whole fork or nothing.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from clrk.api.taskagent import agent_name_problem
from clrk.authoring.templates import TemplateFile, available_templates, read_template, templates_dir
from clrk.errors import ClrkError

__all__ = [
    "PLACEHOLDER",
    "Fork",
    "ScaffoldError",
    "check_name",
    "clrk_checkout",
    "create_fork",
    "next_steps",
    "render_fork",
]

PLACEHOLDER = "{{name}}"
"""Written in template files wherever the agent's name belongs."""


class ScaffoldError(ClrkError):
    """A fork cannot be made: a bad name or template (``option`` names the parameter at fault),
    a destination already taken, or one inside clrk itself."""

    def __init__(self, message: str, option: str | None = None) -> None:
        self.message = message
        self.option = option
        super().__init__(f"{option}: {message}" if option else message)


@dataclass(frozen=True, slots=True)
class Fork:
    name: str
    template: str
    path: Path
    files: list[str]
    """The paths written, relative to ``path``."""


def check_name(name: str) -> str:
    """``name`` if it can name a TaskAgent, else :class:`ScaffoldError` quoting the rule."""
    problem = agent_name_problem(name)
    if problem is not None:
        raise ScaffoldError(f"{name!r} cannot name an agent: {problem}", "NAME")
    return name


def render_fork(name: str, files: Iterable[TemplateFile]) -> list[TemplateFile]:
    """The fork's files: ``{{name}}`` replaced in every text file; binaries and modes kept.

    A script (``#!``) is always executable, even where packaging lost the mode bit.
    """
    check_name(name)
    rendered = []
    for file in files:
        content = file.content
        with contextlib.suppress(UnicodeDecodeError):  # a binary file: copied as it is
            content = content.decode("utf-8").replace(PLACEHOLDER, name).encode("utf-8")
        executable = file.executable or content.startswith(b"#!")
        rendered.append(TemplateFile(file.path, content, executable))
    return rendered


def clrk_checkout(path: Path) -> Path | None:
    """The root of the clrk git checkout that ``path`` lies in, if any."""
    for folder in (path, *path.parents):
        if (folder / ".git").exists() and (folder / "platform" / "clrk" / "__init__.py").is_file():
            return folder
    return None


def _check_destination(path: Path) -> None:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ScaffoldError(f"{path}: already exists and is not a folder; choose another --dir")
    if path.is_dir() and any(path.iterdir()):
        raise ScaffoldError(f"{path}: already exists and is not empty; choose another --dir or remove it")
    checkout = clrk_checkout(path)
    if checkout is not None:
        raise ScaffoldError(f"{path}: inside clrk's own repository ({checkout}); a fork lives outside it: pass --dir")


def _write(folder: Path, files: Iterable[TemplateFile]) -> None:
    for file in files:
        target = folder / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file.content)
        target.chmod(0o755 if file.executable else 0o644)


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def create_fork(name: str, template: str, directory: Path, *, root: Path | None = None) -> Fork:
    """Write template ``template`` with ``name`` into ``directory`` (absent, or an empty folder).

    A new folder appears whole or not at all; an empty one is filled in place, and emptied again
    if writing fails."""
    check_name(name)
    base = root or templates_dir()
    choices = available_templates(base)
    if template not in choices:
        known = ", ".join(choices) or "(none installed)"
        raise ScaffoldError(f"no template {template!r}: choose one of {known}", "--template")
    destination = directory.absolute()
    _check_destination(destination)
    files = render_fork(name, read_template(base / template))
    if destination.is_dir():  # empty (checked): fill it in place, so a shell inside it stays valid
        try:
            _write(destination, files)
        except BaseException:
            _empty(destination)
            raise
        return Fork(name, template, destination, [f.path for f in files])
    if not destination.parent.is_dir():
        raise ScaffoldError(f"{destination.parent}: no such folder")
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=destination.parent))
    try:
        staging.chmod(0o755)
        _write(staging, files)
        staging.rename(destination)  # all or nothing
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Fork(name, template, destination, [f.path for f in files])


def next_steps(fork: Fork, cwd: Path) -> list[str]:
    """What to tell the user once the fork is written."""
    try:
        shown = str(fork.path.relative_to(cwd.absolute()))
    except ValueError:
        shown = str(fork.path)
    return [
        f"Created agent {fork.name} from template {fork.template} in {shown} ({len(fork.files)} files). Next:",
        f"  cd {shown}",
        "  pytest                  # its own test: the real entrypoint through the real shim, no key needed",
        "  export ANTHROPIC_API_KEY=sk-ant-...",
        "  clrk dev --apply manifests --secret anthropic-credentials=ANTHROPIC_API_KEY:api-key",
        f"  clrk invoke {fork.name} --verbose   # in another terminal; README.md has the request to send",
    ]
