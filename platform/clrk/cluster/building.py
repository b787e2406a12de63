"""``clrk build``: an image of a build context, tagged by content, pushed, and the manifests that
build from it pointed at the digest the registry holds.

The I/O shell around :mod:`~clrk.cluster.hashing` and :mod:`~clrk.cluster.rewriting`, driving an
engine through python-on-whales:

- **Docker** (``docker buildx build``): every platform in one build, pushed by buildx, whose
  metadata file gives the digest. Default platforms: linux/amd64 and linux/arm64.
- **podman** (where no Docker engine answers): one ``podman build`` per platform. One platform is
  pushed as a plain image; several are joined in a local manifest list named like the image and
  pushed with all their images. The digest is the one podman's ``--digestfile`` reports for what
  it wrote to the registry, never a local image id. Default platform: this machine's (building
  for others runs their RUN steps under qemu-user-static, which many machines lack).

``engine="auto"`` picks Docker when an engine answers, else podman when installed. The image is
``REGISTRY/<context folder name>:<content tag>``; the manifests get ``…:<tag>@sha256:<digest>``,
so re-apply re-rolls an agent exactly when its build context changed.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from python_on_whales import DockerClient, docker
from python_on_whales.client_config import ClientNotFoundError
from python_on_whales.exceptions import DockerException

from clrk.cluster.hashing import Transform, context_tag
from clrk.cluster.rewriting import rewrite_images
from clrk.errors import BuildError, SpecError

__all__ = [
    "DEFAULT_PLATFORMS",
    "Built",
    "Engine",
    "build_context",
    "choose_engine",
    "host_platform",
    "image_repository",
    "require_docker",
    "require_podman",
    "rewrite_manifests",
    "unpinned",
]

DEFAULT_PLATFORMS = ("linux/amd64", "linux/arm64")
"""Docker's default; podman's is :func:`host_platform`."""

EngineChoice = Literal["auto", "docker", "podman"]
_INSTALL_DOCKER = "install Docker Engine with the buildx plugin (https://docs.docker.com/engine/install/)"
_INSTALL_PODMAN = "install podman (Debian/Ubuntu: `apt-get install podman`)"
_QEMU = (
    "its RUN steps need qemu-user-static registered with binfmt_misc (Debian/Ubuntu: `apt-get install "
    "qemu-user-static binfmt-support`; with Docker: `docker run --privileged --rm tonistiigi/binfmt --install all`)"
)
_NO_PODMAN = "no `podman` command on PATH"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Built:
    image: str
    """``repo:tag``, with ``@digest`` once pushed."""
    tag: str
    rewritten: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Engine:
    """The engine a build runs on: which one, and the python-on-whales client that drives it."""

    name: Literal["docker", "podman"]
    client: DockerClient


def _last_line(exc: DockerException) -> str:
    text = (exc.stderr or exc.stdout or "").strip()
    return text.splitlines()[-1] if text else f"exit status {exc.return_code}"


def _docker_problem() -> str | None:
    try:
        docker.info()
    except ClientNotFoundError:
        return "no `docker` command on PATH"
    except DockerException as exc:
        return f"no Docker engine answers (`docker info`: {_last_line(exc)})"
    return None


def _podman_client() -> DockerClient:
    return DockerClient(client_call=["podman"], client_type="podman")


def _podman_problem() -> str | None:
    try:
        _podman_client().info()
    except ClientNotFoundError:
        return _NO_PODMAN
    except DockerException as exc:
        return f"podman does not work here (`podman info`: {_last_line(exc)})"
    return None


def require_docker() -> None:
    """Fail at once, saying what to do, when no Docker engine answers."""
    problem = _docker_problem()
    if problem is not None:
        raise BuildError(
            f"{problem}: start Docker or point DOCKER_HOST at one, or {_INSTALL_DOCKER}; for multi-arch "
            "builds also `docker buildx create --use`; or build with podman (--engine podman)"
        )


def require_podman() -> None:
    """Fail at once, saying what to do, when podman is missing or does not work."""
    problem = _podman_problem()
    if problem is not None:
        raise BuildError(f"{problem}: {_INSTALL_PODMAN}" if problem == _NO_PODMAN else problem)


def choose_engine(wanted: EngineChoice = "auto") -> Engine:
    """The engine to build with: ``auto`` is Docker when an engine answers, else podman when
    installed; neither is an error naming both and what to install."""
    if wanted == "docker":
        require_docker()
        return Engine("docker", docker)
    if wanted == "podman":
        require_podman()
        return Engine("podman", _podman_client())
    docker_problem = _docker_problem()
    if docker_problem is None:
        return Engine("docker", docker)
    podman_problem = _podman_problem()
    if podman_problem is None:
        return Engine("podman", _podman_client())
    raise BuildError(
        f"no engine to build with: {docker_problem}, and {podman_problem}; start Docker, or "
        f"{_INSTALL_DOCKER}, or {_INSTALL_PODMAN}"
    )


_ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm/v7", "armv6l": "arm/v6", "i686": "386", "i386": "386"}


def host_platform(machine: str | None = None) -> str:
    """This machine's platform as OCI names it: ``linux/amd64`` for ``x86_64``. Linux even on
    macOS and Windows, where podman builds in a Linux VM of the host's architecture."""
    arch = (machine or platform.machine()).lower()
    return f"linux/{_ARCHES.get(arch, arch)}"


def _failed(context: Path, platforms: Iterable[str], exc: DockerException, what: str) -> BuildError:
    """One line: podman's or buildx's last, or, when a binary of another architecture could not
    run (``exec format error``), what that needs."""
    text = f"{exc.stdout or ''}\n{exc.stderr or ''}"
    host = host_platform()
    foreign = [p for p in platforms if p != host]
    if "exec format error" in text.lower() and foreign:
        return BuildError(f"{context}: building for {', '.join(foreign)} on this {host} machine: {_QEMU}")
    return BuildError(f"{context}: {what} failed: {_last_line(exc)}")


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


def _docker_build(
    client: DockerClient, context: Path, image: str, platforms: list[str], push: bool, insecure: bool
) -> str | None:
    """``docker buildx build``, pushing when asked; the pushed digest (buildx's metadata file)."""
    # Pushing to a plain-HTTP or self-signed registry is an option of buildx's image exporter.
    output = {"type": "image", "push": "true", "registry.insecure": "true"} if push and insecure else {}
    with tempfile.TemporaryDirectory(prefix="clrk-build-") as scratch:
        metadata = Path(scratch) / "metadata.json"
        try:
            client.buildx.build(
                context,
                platforms=platforms,
                tags=[image],
                push=push and not output,
                output=output,
                metadata_file=metadata,
            )
        except DockerException as exc:
            raise _failed(context, platforms, exc, "docker buildx build") from None
        digest = json.loads(metadata.read_text()).get("containerimage.digest") if metadata.exists() else None
    if push and not digest:
        raise BuildError(f"{image}: pushed, but buildx reported no digest (update Docker's buildx plugin)")
    return str(digest) if push else None


def _podman(*args: str) -> None:
    """A direct podman call, where python-on-whales cannot say what is needed (see the callers)."""
    done = subprocess.run(["podman", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or [f"exit status {done.returncode}"]
        raise BuildError(f"`podman {' '.join(args)}` failed: {lines[-1]}")


def _podman_build(
    client: DockerClient,
    context: Path,
    image: str,
    platforms: list[str],
    progress: Callable[[str], None],
) -> None:
    """``podman build`` of each platform; several are joined in a manifest list named ``image``."""
    refs = [image] if len(platforms) == 1 else [f"{image}-{p.replace('/', '-')}" for p in platforms]
    for target, ref in zip(platforms, refs, strict=True):
        try:
            # `podman buildx build` is `podman build`. Streamed, because otherwise python-on-whales
            # runs `buildx inspect` (which podman lacks) to find the image it built.
            logs = client.buildx.build(context, platforms=[target], tags=[ref], stream_logs=True)
            for line in cast("Iterator[str]", logs):
                progress(line)
        except DockerException as exc:
            raise _failed(context, [target], exc, f"podman build for {target}") from None
    if len(platforms) == 1:
        return
    try:
        client.manifest.remove(image)  # a list made by an earlier build of the same content
    except DockerException as exc:
        if "not a manifest list" in (exc.stderr or ""):
            # A plain image holds the name (an earlier one-platform build): python-on-whales has
            # no `untag`, and its `image.remove` (`podman rmi`) deletes an image left nameless.
            _podman("untag", image, image)
    try:  # containers-storage: the images just built, where a bare name would be looked up in the registry
        client.manifest.create(image, [f"containers-storage:{ref}" for ref in refs])
    except DockerException as exc:
        raise BuildError(f"{image}: podman manifest create failed: {_last_line(exc)}") from None


def _podman_push(image: str, several: bool, insecure: bool) -> str:
    """Push ``image`` (a manifest list with all its images when ``several``); the digest the
    registry holds. Direct podman calls: python-on-whales' ``push`` and ``manifest push`` pass
    neither ``--digestfile`` nor ``--tls-verify``, and the digest must be the registry's.
    ``--tls-verify`` is passed only to turn it off, so that registries.conf entries still count."""
    with tempfile.TemporaryDirectory(prefix="clrk-build-") as scratch:
        digestfile = Path(scratch) / "digest"
        tls = ["--tls-verify=false"] if insecure else []
        command = ["manifest", "push", "--all"] if several else ["push"]
        _podman(*command, *tls, "--digestfile", str(digestfile), image, f"docker://{image}")
        digest = digestfile.read_text().strip() if digestfile.exists() else ""
    if not _DIGEST.fullmatch(digest):
        raise BuildError(f"{image}: pushed, but podman reported no digest ({digest or 'empty digest file'})")
    return digest


def build_context(
    context: Path,
    registry: str | None,
    platforms: list[str] | None,
    manifests: list[Path],
    report: Callable[[str], None],
    *,
    engine: EngineChoice = "auto",
    insecure: bool = False,
    progress: Callable[[str], None] = lambda line: None,
) -> Built:
    """Build (and with a registry, push) ``context``; rewrite ``manifests`` to the pushed digest.

    ``platforms`` None is the engine's default; ``insecure`` pushes over plain HTTP or without
    verifying the registry's certificate; ``progress`` gets podman's build output line by line
    (buildx writes its own to the terminal)."""
    if not (context / "Dockerfile").is_file():
        raise BuildError(f"{context}: no Dockerfile in this build context")
    chosen = choose_engine(engine)
    tag = context_tag(context, unpinned(context))
    image = f"{image_repository(registry or 'clrk.local', context)}:{tag}"
    targets = platforms or (list(DEFAULT_PLATFORMS) if chosen.name == "docker" else [host_platform()])
    report(f"building {image} for {', '.join(targets)} with {chosen.name}")
    if chosen.name == "docker":
        digest = _docker_build(chosen.client, context, image, targets, registry is not None, insecure)
    else:
        _podman_build(chosen.client, context, image, targets, progress)
        digest = _podman_push(image, len(targets) > 1, insecure) if registry is not None else None
    if digest is None:
        report(f"built {image} (not pushed: pass --push REGISTRY to push and rewrite the manifests)")
        return Built(image, tag)
    pinned = f"{image}@{digest}"
    changed = rewrite_manifests(manifests, context, pinned)
    for file in changed:
        report(f"{file}: image set to {pinned}")
    return Built(pinned, tag, changed)
