"""`clrk build --engine podman` for real: podman builds, pushes to a real registry, and the
manifests are pinned to the digest that registry serves.

The registry is Debian's ``docker-registry`` (the CNCF ``distribution`` registry), started on
127.0.0.1 on a free port with its storage in a temporary folder, over plain HTTP (hence
``--insecure-registry``). The machine is the container tier's (``hack/containers.sh``); without it,
or without ``docker-registry``, these tests skip saying what to install. Every local image they
make is named under their own registry's address or ``localhost/clrk-test-build-…`` and removed.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import shutil
import struct
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clrk.cluster.building import host_platform
from tests.support.podman import BASES, engine_problem, free_port, podman

pytestmark = [pytest.mark.containers, pytest.mark.timeout(300)]

ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
INDEXES = {"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"}
MANIFEST = """\
# The greeter, as its team keeps it: clrk build changes only the image below.
apiVersion: clrk.dev/v1alpha1
kind: TaskAgent
metadata:
  name: greeter
  annotations:
    clrk.dev/build-context: ../agent  # relative to this file
spec:
  template:
    spec:
      image: greeter:dev  # pinned by clrk build
      command: ["/bin/cat", "/greeting.txt"]
"""


@pytest.fixture(scope="module")
def engine() -> None:
    problem = engine_problem()
    if problem is not None:
        pytest.skip(f"container tier: {problem}")


def _remove_local_images(prefix: str) -> None:
    """Every local image and manifest list named under ``prefix`` (lists first: `podman rmi`
    given a list's name removes the list's image for this platform instead)."""
    names = [n for n in podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split() if n.startswith(prefix)]
    lists = [n for n in names if podman("manifest", "exists", n, check=False).returncode == 0]
    for name in lists:
        podman("manifest", "rm", name, check=False)
    images = [n for n in names if n not in lists]
    if images:
        podman("rmi", *images, check=False)


@pytest.fixture(scope="module")
def registry(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``127.0.0.1:PORT`` of a registry of this module's own."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("no docker-registry: apt-get install docker-registry (Debian's distribution registry)")
    root = tmp_path_factory.mktemp("registry")
    address = f"127.0.0.1:{free_port()}"
    config = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
        "http": {"addr": address},
    }
    (root / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    with (root / "registry.log").open("w") as log:
        server = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not _answers(f"http://{address}/v2/"):
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"docker-registry did not start:\n{(root / 'registry.log').read_text()}")
            time.sleep(0.1)
        yield address
    finally:
        server.terminate()
        server.wait(timeout=10)
        _remove_local_images(f"{address}/")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def bases(engine: None) -> Iterator[str]:
    """A repository for base images this test imports (removed after it)."""
    repository = f"localhost/clrk-test-build-{uuid.uuid4().hex[:8]}/base"
    yield repository
    _remove_local_images(f"{repository}:")


def import_base(ref: str, arch: str, files: dict[str, tuple[bytes, int]], scratch: Path) -> None:
    """A one-layer image of ``files`` (path: content, mode) whose config says linux/``arch``."""
    tarball = scratch / f"{arch}.tar"
    with tarfile.open(tarball, mode="w") as tar:
        for name, (content, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), mode
            tar.addfile(info, io.BytesIO(content))
    podman("import", "--quiet", "--os", "linux", "--arch", arch, str(tarball), ref)


def clrk(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clrk", *map(str, args)], capture_output=True, text=True, timeout=240, check=False
    )


def write_agent(tmp_path: Path, dockerfile: str) -> tuple[Path, Path]:
    """``tmp_path/agent`` (the build context) and ``tmp_path/manifests/taskagent.yaml``."""
    agent = tmp_path / "agent"
    agent.mkdir()
    (agent / "Dockerfile").write_text(dockerfile)
    (agent / "greeting.txt").write_text("hello from a content-tagged image\n")
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "taskagent.yaml").write_text(MANIFEST)
    return agent, manifests


def served(registry: str, name: str, reference: str) -> httpx.Response:
    response = httpx.get(f"http://{registry}/v2/{name}/manifests/{reference}", headers={"Accept": ACCEPT})
    assert response.status_code == 200, response.text
    assert "sha256:" + hashlib.sha256(response.content).hexdigest() == response.headers["Docker-Content-Digest"]
    return response


def config_of(registry: str, name: str, manifest: dict[str, Any]) -> dict[str, Any]:
    response = httpx.get(f"http://{registry}/v2/{name}/blobs/{manifest['config']['digest']}")
    assert response.status_code == 200, response.text
    config: dict[str, Any] = response.json()
    return config


def build_and_push(registry: str, agent: Path, manifests: Path, *platforms: str) -> tuple[str, str, str]:
    """``clrk build`` to ``REGISTRY/team``: (repository, tag, digest), after checking it
    succeeded and pinned exactly the image line of the manifest."""
    options = [item for p in platforms for item in ("--platform", p)]
    done = clrk("build", agent, "--engine", "podman", *options, "--push", f"{registry}/team", "--insecure-registry",
                "-f", manifests)  # fmt: skip
    assert done.returncode == 0, f"clrk build failed:\n{done.stdout}\n{done.stderr}"
    pinned = done.stdout.splitlines()[-1]
    image, digest = pinned.split("@")
    repository, tag = image.rsplit(":", 1)
    assert repository == f"{registry}/team/agent"
    assert (manifests / "taskagent.yaml").read_text() == MANIFEST.replace("greeter:dev", pinned)
    return repository, tag, digest


def test_push_pins_the_manifests_to_the_digest_the_registry_serves(registry: str, tmp_path: Path) -> None:
    dockerfile = f"FROM {BASES['bookworm']}\nCOPY greeting.txt /greeting.txt\nRUN test -s /greeting.txt\n"
    agent, manifests = write_agent(tmp_path, dockerfile)
    _, tag, digest = build_and_push(registry, agent, manifests, host_platform())
    response = served(registry, "team/agent", tag)
    assert response.headers["Docker-Content-Digest"] == digest
    assert response.headers["Content-Type"] not in INDEXES, "one platform: a plain image"
    config = config_of(registry, "team/agent", response.json())
    assert f"{config['os']}/{config['architecture']}" == host_platform()

    _, again, digest_again = build_and_push(registry, agent, manifests, host_platform())
    assert again == tag, "an unchanged context keeps its tag"
    assert digest_again == digest, "and, rebuilt from podman's layer cache, its digest"


def test_several_platforms_push_a_manifest_list_with_all_its_images(registry: str, bases: str, tmp_path: Path) -> None:
    # Base images without programs, so that no RUN step needs the other architecture's CPU.
    for arch in ("amd64", "arm64"):
        import_base(f"{bases}:{arch}", arch, {"etc/arch": (arch.encode(), 0o644)}, tmp_path)
    dockerfile = f"ARG TARGETARCH\nFROM {bases}:${{TARGETARCH}}\nCOPY greeting.txt /greeting.txt\n"
    agent, manifests = write_agent(tmp_path, dockerfile)
    # First one platform: the plain image it leaves under the name gives way to the list, and a
    # second list build replaces the first list.
    _, one_platform, _ = build_and_push(registry, agent, manifests, host_platform())
    build_and_push(registry, agent, manifests, "linux/amd64", "linux/arm64")
    _, tag, digest = build_and_push(registry, agent, manifests, "linux/amd64", "linux/arm64")
    assert tag == one_platform
    response = served(registry, "team/agent", tag)
    assert response.headers["Docker-Content-Digest"] == digest
    assert response.headers["Content-Type"] in INDEXES
    children = {f"{m['platform']['os']}/{m['platform']['architecture']}": m for m in response.json()["manifests"]}
    assert set(children) == {"linux/amd64", "linux/arm64"}
    for name, child in children.items():
        manifest = served(registry, "team/agent", child["digest"]).json()
        config = config_of(registry, "team/agent", manifest)
        assert f"{config['os']}/{config['architecture']}" == name


# The first bytes of an ELF executable for another machine: enough for the kernel to refuse it.
_ELF_MACHINE = {"amd64": 62, "arm64": 183}


def test_a_foreign_platform_without_emulation_says_what_it_needs(bases: str, tmp_path: Path) -> None:
    host = host_platform().removeprefix("linux/")
    foreign = "arm64" if host != "arm64" else "amd64"
    if host not in _ELF_MACHINE:
        pytest.skip(f"no foreign architecture to try from {platform.machine()}")
    if any(Path("/proc/sys/fs/binfmt_misc").glob(f"qemu-{'aarch64' if foreign == 'arm64' else 'x86_64'}*")):
        pytest.skip(f"binfmt_misc runs {foreign} binaries here (qemu-user-static): nothing fails")
    header = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHI", 2, _ELF_MACHINE[foreign], 1) + bytes(44)
    import_base(f"{bases}:{foreign}", foreign, {"bin/sh": (header, 0o755)}, tmp_path)
    agent, _ = write_agent(tmp_path, f"FROM {bases}:{foreign}\nRUN true\n")
    done = clrk("build", agent, "--engine", "podman", "--platform", f"linux/{foreign}")
    assert done.returncode == 1, done.stdout + done.stderr
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert f"building for linux/{foreign} on this linux/{host} machine" in error
    assert "qemu-user-static" in error and "binfmt" in error
    assert str(agent) in error
