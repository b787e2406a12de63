"""``clrk build``: a multi-arch image of a build context, tagged by content, pushed, and the
manifests that build from it pointed at the pushed digest.

The I/O shell around :mod:`~clrk.cluster.hashing` and :mod:`~clrk.cluster.rewriting`: Docker
through python-on-whales (``docker buildx build``), files read and written here. The image is
``REGISTRY/<context folder name>:<content tag>``; the manifests get ``…:<tag>@sha256:<digest>``,
so re-apply re-rolls an agent exactly when its build context changed.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from python_on_whales import docker
from python_on_whales.client_config import ClientNotFoundError
from python_on_whales.exceptions import DockerException

from clrk.cluster.hashing import Transform, context_tag
from clrk.cluster.rewriting import rewrite_images
from clrk.errors import BuildError, SpecError

__all__ = [
    "DEFAULT_PLATFORMS",
    "Built",
    "build_context",
    "image_repository",
    "require_docker",
    "rewrite_manifests",
    "unpinned",
]

DEFAULT_PLATFORMS = ("linux/amd64", "linux/arm64")


@dataclass(frozen=True)
class Built:
    image: str
    """``repo:tag``, with ``@digest`` once pushed."""
    tag: str
    rewritten: list[Path] = field(default_factory=list)


def _first_line(exc: DockerException) -> str:
    text = (exc.stderr or exc.stdout or "").strip()
    return text.splitlines()[-1] if text else f"exit status {exc.return_code}"


def require_docker() -> None:
    """Fail at once, saying what to do, when no Docker engine answers."""
    try:
        docker.info()
    except ClientNotFoundError:
        raise BuildError("no `docker` command on PATH: clrk build needs Docker with buildx") from None
    except DockerException as exc:
        raise BuildError(
            f"no Docker engine answers (`docker info`: {_first_line(exc)}); start Docker, or point "
            "DOCKER_HOST at one; for multi-arch builds also `docker buildx create --use`"
        ) from None


def image_repository(registry: str, context: Path) -> str:
    """``REGISTRY/<folder name>``, the name lower-cased to what registries accept."""
    name = re.sub(r"[^a-z0-9._-]+", "-", context.resolve().name.lower()).strip("-._") or "agent"
    return f"{registry.rstrip('/')}/{name}"


_PLACEHOLDER = "clrk-build-pinned-image"


def unpinned(context: Path) -> Transform:
    """Hash manifests inside the context with their own image pins blanked: otherwise each
    ``clrk build`` that rewrites them would change the next build's tag."""

    def transform(path: Path, content: bytes) -> bytes:
        if path.suffix not in (".yaml", ".yml"):
            return content
        try:
            text = content.decode("utf-8")
            blanked = rewrite_images(text, str(path), path.parent, context, _PLACEHOLDER)
        except (UnicodeDecodeError, SpecError):
            return content
        return content if blanked is None else blanked.encode("utf-8")

    return transform


def rewrite_manifests(paths: list[Path], context: Path, image: str) -> list[Path]:
    """Point every TaskAgent under ``paths`` built from ``context`` at ``image``; return the files changed."""
    files: list[Path] = []
    for path in paths:
        files += sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")) if path.is_dir() else [path]
    changed = []
    for file in files:
        text = file.read_text(encoding="utf-8")
        new = rewrite_images(text, str(file), file.parent, context, image)
        if new is not None and new != text:
            file.write_text(new, encoding="utf-8")
            changed.append(file)
    return changed


def build_context(
    context: Path,
    registry: str | None,
    platforms: list[str],
    manifests: list[Path],
    report: Callable[[str], None],
) -> Built:
    """Build (and with a registry, push) ``context``; rewrite ``manifests`` to the pushed digest."""
    if not (context / "Dockerfile").is_file():
        raise BuildError(f"{context}: no Dockerfile in this build context")
    require_docker()
    tag = context_tag(context, unpinned(context))
    image = f"{image_repository(registry or 'clrk.local', context)}:{tag}"
    report(f"building {image} for {', '.join(platforms)}")
    with tempfile.TemporaryDirectory(prefix="clrk-build-") as scratch:
        metadata = Path(scratch) / "metadata.json"
        try:
            docker.buildx.build(
                context, platforms=platforms, tags=[image], push=registry is not None, metadata_file=metadata
            )
        except DockerException as exc:
            raise BuildError(f"{context}: docker buildx build failed: {_first_line(exc)}") from None
        digest = json.loads(metadata.read_text()).get("containerimage.digest") if metadata.exists() else None
    if registry is None:
        report(f"built {image} (not pushed: pass --push REGISTRY to push and rewrite the manifests)")
        return Built(image, tag)
    if not digest:
        raise BuildError(f"{image}: pushed, but buildx reported no digest (update Docker's buildx plugin)")
    pinned = f"{image}@{digest}"
    changed = rewrite_manifests(manifests, context, pinned)
    for file in changed:
        report(f"{file}: image set to {pinned}")
    return Built(pinned, tag, changed)
