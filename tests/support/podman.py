"""podman and buildah for the container tier: images built by content hash, Pods played and removed.

No registry is reachable here: base images are made by ``hack/containers.sh`` (``BASES``), and an
image is rebuilt only when what it is made of changes (its tag is the hash of its Dockerfile, the
files it copies and its build args, base images' ids included). Pods run with
``podman kube play`` on one podman network, where they reach each other by pod name (and by the
aliases given to :meth:`Pods.play`).

Two things of podman 4.3's ``kube play`` that the helpers adjust, each in :meth:`Pods.play`:
an emptyDir becomes a volume named after the volume alone (two pods would share it), so it gets
the pod's name in front; and an init container is removed once it has run, so the pod asks to
keep it (``io.podman.annotations.init.container.type: always``) and its logs show on failure.
:meth:`Pods.close` removes those volumes, and the ones podman makes for ConfigMaps (named after
the ConfigMap: :mod:`tests.support.kubeplay` names them after the pod).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from clrk.manifests.documents import dump_all

__all__ = [
    "BASES",
    "REPO",
    "Pod",
    "Pods",
    "build_image",
    "engine_problem",
    "free_port",
    "podman",
    "stage_context",
    "wheel",
    "wheelhouse",
]

REPO = Path(__file__).resolve().parents[2]
BASES = {
    "bookworm": "localhost/clrk-base/debian:bookworm",
    "trixie": "localhost/clrk-base/debian:trixie",
    "noglibc": "localhost/clrk-base/noglibc",
    "noshell": "localhost/clrk-base/noshell",
}
"""The base images hack/containers.sh makes (see its --help for what each stands for)."""
_KEEP_INIT = {"io.podman.annotations.init.container.type": "always"}
_STATE = "{{.State.Status}} {{.State.ExitCode}}"
_IGNORED = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


def podman(
    *args: str, timeout: float = 120, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``podman ARGS`` (``input`` on its stdin); on failure (when ``check``), an AssertionError
    carrying its output."""
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False, input=input)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done


def engine_problem() -> str | None:
    """Why images cannot be built and run here (hack/containers.sh --check's words), or None."""
    try:
        done = subprocess.run(
            ["bash", str(REPO / "hack" / "containers.sh"), "--check"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"hack/containers.sh --check could not run: {exc}"
    if done.returncode == 0:
        return None
    lines = [line.removeprefix("containers.sh: ") for line in done.stderr.splitlines() if line.strip()]
    return "; ".join(lines) or f"hack/containers.sh --check exited {done.returncode}"


def _files(paths: Iterable[Path]) -> Iterable[Path]:
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and not _IGNORED.intersection(child.relative_to(path).parts):
                    yield child
        else:
            yield path


def _image_id(ref: str) -> str | None:
    done = podman("image", "inspect", "--format", "{{.Id}}", ref, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def build_image(
    name: str,
    dockerfile: Path,
    *,
    inputs: Sequence[Path],
    build_args: Mapping[str, str] | None = None,
    context: Path = REPO,
    timeout: float = 1800,
) -> str:
    """``localhost/clrk-test/NAME:<hash>``, built with ``buildah bud`` unless it already exists.

    ``inputs`` are the files and folders (under ``context``) the Dockerfile copies or mounts; the
    hash covers them, the Dockerfile, the build args and the ids of local images they name. Other
    tags of the same name are removed once a new one is built.
    """
    args = dict(build_args or {})
    digest = hashlib.sha256(dockerfile.read_bytes())
    for key, value in sorted(args.items()):
        digest.update(f"\0arg {key}={value}={_image_id(value) if value.startswith('localhost/') else ''}".encode())
    for path in _files(inputs):
        digest.update(f"\0file {path.relative_to(context)}\0".encode() + path.read_bytes())
    repository = f"localhost/clrk-test/{name}"
    tag = f"{repository}:{digest.hexdigest()[:16]}"
    if _image_id(tag) is not None:
        return tag
    argv = ["buildah", "bud", "--isolation", "chroot", "--layers", "-f", str(dockerfile), "-t", tag]
    argv += [f"--build-arg={key}={value}" for key, value in args.items()]
    done = subprocess.run([*argv, str(context)], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError(f"building {tag} failed ({' '.join(argv)}):\n{done.stdout[-6000:]}{done.stderr[-4000:]}")
    listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}", repository).stdout.split()
    for old in set(listed) - {tag}:
        podman("rmi", old, check=False)
    return tag


def wheelhouse(*locks: Path, python: str, machine: str | None = None, root: Path = REPO) -> Path:
    """``root``/build/wheelhouse/<tags>-<key>: every wheel the hash-pinned requirement files
    ``locks`` name (hack/lock-images.py writes them) for CPython ``python`` (e.g. ``3.13``) on
    Linux/``machine`` (default: this one's), for builds whose RUN steps reach no index (the
    Dockerfiles' WHEELHOUSE). Made by this host's pip, which checks every hash, and kept while the
    files are unchanged."""
    machine = machine or platform.machine()
    tags = f"cp{python.replace('.', '')}-{machine}"
    key = hashlib.sha256(b"".join(lock.read_bytes() for lock in locks) + tags.encode()).hexdigest()[:12]
    out = root / "build" / "wheelhouse" / f"{tags}-{key}"
    if out.is_dir():
        return out
    scratch = out.with_name(out.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    # Manylinux wheels name the oldest glibc they need; any up to Debian trixie's (2.41) runs here.
    platforms = [f"manylinux_2_{minor}_{machine}" for minor in range(41, 16, -1)]
    platforms += [f"manylinux2014_{machine}", f"linux_{machine}"]
    abi = f"cp{python.replace('.', '')}"
    target = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    target += ["--abi", abi, "--abi", "abi3", "--abi", "none", *(f"--platform={p}" for p in platforms)]
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check", "download", "-d", str(scratch)]
    for lock in locks:  # one at a time: two files may pin a package at different versions
        _pip([*pip, *target, "--no-deps", "--require-hashes", "-r", str(lock)])
    scratch.rename(out)
    return out


def wheel(wheels: Path, distribution: str) -> Path:
    """The one wheel of ``distribution`` (its file-name spelling, e.g. ``claude_agent_sdk``) in ``wheels``."""
    (found,) = wheels.glob(f"{distribution}-*.whl")
    return found


def stage_context(source: Path, into: Path, extra: Sequence[Path] = ()) -> Path:
    """A build context at ``into``: a copy of the folder ``source`` plus the files ``extra`` at its
    top (hard links where the file system allows: a wheel is large). Replaces what was there."""
    shutil.rmtree(into, ignore_errors=True)
    shutil.copytree(source, into, ignore=shutil.ignore_patterns(*_IGNORED))
    for path in extra:
        try:
            os.link(path, into / path.name)
        except OSError:
            shutil.copy2(path, into / path.name)
    return into


def _pip(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a pod's hostPort)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Pod:
    """A played pod: its containers are ``<pod>-<container>``, as ``kube play`` names them."""

    def __init__(self, name: str, manifest: dict[str, Any], network: str = "") -> None:
        self.name = name
        self.manifest = manifest
        self.network = network

    def address(self) -> str:
        """The pod's IP address on its network (the host reaches it through the gateway)."""
        done = podman("pod", "inspect", "--format", "{{.InfraContainerID}}", self.name)
        infra = done.stdout.strip()
        template = f'{{{{(index .NetworkSettings.Networks "{self.network}").IPAddress}}}}'
        return podman("inspect", "--format", template, infra).stdout.strip()

    def container(self, name: str) -> str:
        return f"{self.name}-{name}"

    def state(self, container: str) -> tuple[str, int]:
        """``(status, exit code)`` of one of the pod's containers, e.g. ``("running", 0)``."""
        done = podman("inspect", "--format", _STATE, self.container(container))
        status, code = done.stdout.split()
        return status, int(code)

    def logs(self, container: str) -> str:
        done = podman("logs", self.container(container), check=False)
        return done.stdout + done.stderr

    def report(self) -> str:
        """Every container's status and logs: what a failing test shows."""
        spec = self.manifest["spec"]
        names = [c["name"] for c in [*spec.get("initContainers", []), *spec["containers"]]]
        parts = [f"pod {self.name}:"]
        for name in names:
            done = podman("inspect", "--format", _STATE, self.container(name), check=False)
            status = done.stdout.strip() if done.returncode == 0 else "(no such container)"
            parts.append(f"--- {self.container(name)}: {status}\n{self.logs(name).rstrip()}")
        return "\n".join(parts)

    def wait_exit(self, container: str, timeout: float = 60) -> int:
        """The exit code of ``container`` once it has exited (AssertionError after ``timeout`` s)."""
        self.wait_until(lambda: self.state(container)[0] in ("exited", "stopped"), f"{container} exits", timeout)
        return self.state(container)[1]

    def wait_until(
        self, check: Callable[[], bool], what: str, timeout: float = 60, *, running: str | None = None
    ) -> None:
        """Poll ``check`` until it holds; fail, showing the pod, after ``timeout`` seconds or as
        soon as the ``running`` container has stopped."""
        deadline = time.monotonic() + timeout
        while True:
            if check():
                return
            if running is not None and self.state(running)[0] in ("exited", "stopped"):
                raise AssertionError(f"{self.container(running)} stopped before {what}\n{self.report()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout:g}s: {what}\n{self.report()}")
            time.sleep(0.2)


class Pods:
    """Plays Pod manifests on one podman network; :meth:`close` removes them all."""

    def __init__(self, network: str, workdir: Path) -> None:
        self.network = network
        self.workdir = workdir
        self._played: list[Pod] = []

    def play(
        self, manifest: dict[str, Any], documents: Sequence[dict[str, Any]] = (), aliases: Sequence[str] = ()
    ) -> Pod:
        """Play the Pod ``manifest`` with ``documents`` (the ConfigMaps it uses) in the same file;
        on the network it also answers to the DNS names ``aliases``."""
        manifest = json.loads(json.dumps(manifest))  # a copy, adjusted as the module docstring says
        name = manifest["metadata"]["name"]
        manifest["metadata"]["annotations"] = {**manifest["metadata"].get("annotations", {}), **_KEEP_INIT}
        spec = manifest["spec"]
        renamed = {v["name"]: f"{name}-{v['name']}" for v in spec.get("volumes", []) if "emptyDir" in v}
        for volume in spec.get("volumes", []):
            volume["name"] = renamed.get(volume["name"], volume["name"])
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            for mount in container.get("volumeMounts", []):
                mount["name"] = renamed.get(mount["name"], mount["name"])
        path = self.workdir / f"{name}.yaml"
        path.write_text(dump_all([*documents, manifest]))
        pod = Pod(name, manifest, self.network)
        self._played.append(pod)
        network = ",".join([self.network, *(f"alias={alias}" for alias in aliases)]).replace(",", ":", 1)
        podman("kube", "play", "--quiet", "--network", network, str(path))
        return pod

    def close(self) -> None:
        for pod in reversed(self._played):
            # `pod rm --force --time 0` still waits ~3 s here (podman 4.3): stop first, then remove.
            podman("pod", "stop", "--time", "0", pod.name, check=False)
            podman("pod", "rm", "--force", pod.name, check=False)
            spec = pod.manifest["spec"]
            volumes = [v["name"] for v in spec.get("volumes", []) if "emptyDir" in v]
            volumes += [v["configMap"]["name"] for v in spec.get("volumes", []) if "configMap" in v]
            if volumes:
                podman("volume", "rm", "--force", *volumes, check=False)
        self._played.clear()
