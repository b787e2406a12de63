"""What ``clrk dev`` needs from an agent's Dockerfile, read without building it.

The final stage's ENTRYPOINT and CMD say what to run; its COPY/ADD of local files say which
files of the build context the agent expects where (``clrk dev`` binds them read-only at those
destinations); its RUN lines are not run, only listed for ``clrk doctor``. Parsing is pure
(``parse_dockerfile(text)``); ``read_build_context`` is the I/O edge.
"""

from __future__ import annotations

import io
import json
import posixpath
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from dockerfile_parse import DockerfileParser

from clrk.errors import BuildError

__all__ = ["BuildContext", "CopiedFile", "ImageConfig", "parse_dockerfile", "read_build_context"]


@dataclass(frozen=True, slots=True)
class CopiedFile:
    source: str
    """Path inside the build context, as written."""
    destination: str
    """Absolute path inside the image."""


@dataclass(frozen=True)
class ImageConfig:
    """The parts of the final image that matter to running the agent."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    copies: list[CopiedFile] = field(default_factory=list)
    run: list[str] = field(default_factory=list)
    """RUN lines of the final stage, as written (what the image installs)."""
    env: dict[str, str] = field(default_factory=dict)
    """ENV of the image: listed for reference; it does NOT reach the agent (only the manifest's
    env does), as in a cluster."""

    @property
    def argv(self) -> list[str]:
        return self.entrypoint + self.cmd


@dataclass(frozen=True)
class BuildContext:
    path: Path
    image: ImageConfig


def _exec_form(value: str) -> list[str]:
    text = value.strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(p, str) for p in parsed):
            return parsed
    return ["/bin/sh", "-c", text]


def _copies(value: str, workdir: str) -> list[CopiedFile]:
    words = shlex.split(value)
    if any(w.startswith("--from") for w in words):
        return []  # from another stage or image: not a file of the build context
    words = [w for w in words if not w.startswith("--")]
    if value.strip().startswith("["):
        words = json.loads(value.strip())
    if len(words) < 2:
        return []
    *sources, dest = words
    into_dir = dest.endswith("/") or dest in (".", "./") or len(sources) > 1
    dest = posixpath.normpath(posixpath.join(workdir, dest))
    return [
        CopiedFile(src, posixpath.join(dest, posixpath.basename(src.rstrip("/"))) if into_dir else dest)
        for src in sources
    ]


def parse_dockerfile(text: str) -> ImageConfig:
    """Read the final stage of a Dockerfile. Stages built ``FROM`` an earlier stage inherit its
    ENTRYPOINT, CMD, ENV and copies, as Docker does."""
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode("utf-8")), env_replace=False)
    stages: dict[str, ImageConfig] = {}
    current = ImageConfig()
    workdir = "/"
    for item in parser.structure:
        instruction, value = item["instruction"], item["value"]
        if instruction == "FROM":
            words = value.split()
            base = stages.get(words[0].lower())
            current = ImageConfig(
                entrypoint=list(base.entrypoint) if base else [],
                cmd=list(base.cmd) if base else [],
                copies=list(base.copies) if base else [],
                run=list(base.run) if base else [],
                env=dict(base.env) if base else {},
            )
            if len(words) >= 3 and words[-2].upper() == "AS":
                stages[words[-1].lower()] = current
            workdir = "/"
        elif instruction == "ENTRYPOINT":
            current.entrypoint[:] = _exec_form(value)
            current.cmd.clear()  # Docker resets CMD when ENTRYPOINT is set
        elif instruction == "CMD":
            current.cmd[:] = _exec_form(value)
        elif instruction in ("COPY", "ADD"):
            current.copies.extend(_copies(value, workdir))
        elif instruction == "RUN":
            current.run.append(value)
        elif instruction == "WORKDIR":
            workdir = posixpath.join(workdir, value.strip())
        elif instruction == "ENV":
            for word in shlex.split(value):
                name, _, val = word.partition("=")
                current.env[name] = val
    return current


def read_build_context(path: Path) -> BuildContext:
    """Read ``path/Dockerfile``. Raises :class:`BuildError` naming what is missing."""
    dockerfile = path / "Dockerfile"
    try:
        text = dockerfile.read_text(encoding="utf-8")
    except OSError as exc:
        raise BuildError(f"{dockerfile}: cannot read the build context's Dockerfile: {exc.strerror}") from None
    return BuildContext(path=path, image=parse_dockerfile(text))
