"""The container tier: real OCI images built from the repository's Dockerfiles, run by podman.

The machine is made ready by ``hack/containers.sh`` (podman, buildah, runc, a containers.conf
that works here, and the base images: no registry is reachable). When it is not ready, every test
here skips, saying exactly what is missing (``hack/containers.sh --check``'s words).

Images are tagged by a hash of what they are made of, so a second session reuses them; Pods are
played with ``podman kube play`` on one podman network per session, and removed after each test.
The platform's tests (test_platform.py, test_jq_bot.py) also get a real kube-apiserver on that
network's gateway with ``clrk install`` applied (:class:`tests.support.stack.Platform`): it needs
the cluster tier's binaries (``hack/envtest.sh``, which ``make test`` runs first).
"""

from __future__ import annotations

import json
import platform
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clrk.authoring import create_fork
from clrk.cluster import connect
from clrk.cluster.configs import install_objects
from tests.support.envtest import EnvTest, missing_binaries
from tests.support.kube import install_knative
from tests.support.podman import (
    BASES,
    REPO,
    Pods,
    build_image,
    engine_problem,
    podman,
    stage_context,
    wheel,
    wheelhouse,
)
from tests.support.stack import Platform

IMAGE_PYTHON = "3.13"
"""The Python of every image built here: Debian trixie's (BASES["trixie"]), which the pinned
requirement files (hack/lock-images.py) are for."""


@pytest.fixture(scope="session")
def engine() -> None:
    """podman and buildah work here and the base images exist; else skip, saying what is missing."""
    problem = engine_problem()
    if problem is not None:
        pytest.skip(f"container tier: {problem}")


@pytest.fixture(scope="session")
def network(engine: None) -> Iterator[str]:
    """A podman network of this session's own: its pods reach each other by pod name."""
    name = f"clrk-test-{uuid.uuid4().hex[:8]}"
    podman("network", "create", name)
    yield name
    podman("network", "rm", "--force", name, check=False)


@pytest.fixture
def pods(network: str, tmp_path: Path) -> Iterator[Pods]:
    played = Pods(network, tmp_path)
    yield played
    played.close()


@pytest.fixture
def pod_name(request: pytest.FixtureRequest) -> str:
    """A pod name unique to this test (a DNS label: lower case, at most 63 characters)."""
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name.lower()).strip("-")[:40].rstrip("-")
    return f"{stem}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def build(engine: None) -> Callable[..., str]:
    """:func:`tests.support.podman.build_image`, once the engine is known to work."""
    return build_image


@pytest.fixture(scope="session")
def wheels(engine: None) -> Path:
    """The wheels every pinned requirement file names, for the images' Python on this machine:
    the Dockerfiles' WHEELHOUSE (RUN steps here reach no index)."""
    locks = [
        REPO / "runtime" / "build-requirements.txt",
        REPO / "runtime" / "image-requirements.txt",
        REPO / "platform" / "image-requirements.txt",
    ]
    return wheelhouse(*locks, python=IMAGE_PYTHON, machine=platform.machine())


@pytest.fixture(scope="session")
def runtime_image(build: Callable[..., str], wheels: Path) -> str:
    """runtime/Dockerfile built here: offline, on the local trixie base, with the local busybox
    stand-in (noglibc) as its final stage."""
    return build(
        "runtime",
        REPO / "runtime" / "Dockerfile",
        inputs=[REPO / "runtime"],
        build_args={
            "DEBIAN_IMAGE": BASES["trixie"],
            "BUSYBOX_IMAGE": BASES["noglibc"],
            "WHEELHOUSE": str(wheels.relative_to(REPO)),
        },
    )


def _platform_image(build: Callable[..., str], wheels: Path, component: str) -> str:
    return build(
        component,
        REPO / "platform" / f"Dockerfile.{component}",
        inputs=[REPO / name for name in ("pyproject.toml", "README.md", "platform", "runtime", "templates")],
        build_args={"DEBIAN_IMAGE": BASES["trixie"], "WHEELHOUSE": str(wheels.relative_to(REPO))},
    )


@pytest.fixture(scope="session")
def ingress_image(build: Callable[..., str], wheels: Path) -> str:
    """platform/Dockerfile.ingress (the ingress and the operator), offline on the trixie base."""
    return _platform_image(build, wheels, "ingress")


@pytest.fixture(scope="session")
def egress_image(build: Callable[..., str], wheels: Path) -> str:
    """platform/Dockerfile.egress, offline on the trixie base (its build stage is the ingress's,
    word for word: the layers are shared)."""
    return _platform_image(build, wheels, "egress")


@pytest.fixture(scope="session")
def agent_image(
    build: Callable[..., str], wheels: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], str]:
    """``agent_image("examples/jq-bot")`` or ``agent_image("templates/shell")``: that agent's
    Dockerfile built here on the trixie base, the Claude CLI taken from the pinned wheel in the
    build context (CLAUDE_WHEEL) instead of PyPI. A template is built as a user builds it: forked
    with ``clrk new`` (name ``my-bot``) first."""
    sdk = wheel(wheels, "claude_agent_sdk")
    staging = tmp_path_factory.mktemp("contexts")
    built: dict[str, str] = {}

    def image(which: str) -> str:
        if which not in built:
            kind, name = which.split("/")
            context = staging / f"{kind}-{name}"
            if kind == "templates":
                fork = create_fork("my-bot", name, staging / f"fork-{name}").path
                stage_context(fork, context, [sdk])
            else:
                stage_context(REPO / which, context, [sdk])
            built[which] = build(
                f"{kind}-{name}",
                context / "Dockerfile",
                context=context,
                inputs=[path for path in context.iterdir() if path.name != sdk.name],
                build_args={"DEBIAN_IMAGE": BASES["trixie"], "CLAUDE_WHEEL": sdk.name},
            )
        return built[which]

    return image


@pytest.fixture(scope="session")
def tools_image(build: Callable[..., str]) -> str:
    """tests/containers/tools.Dockerfile: python3 (h11, cryptography) and socat, for the tier's
    stand-ins (the fake Anthropic API, Knative's routing)."""
    dockerfile = REPO / "tests" / "containers" / "tools.Dockerfile"
    return build("tools", dockerfile, inputs=[dockerfile], build_args={"DEBIAN_IMAGE": BASES["trixie"]})


@pytest.fixture(scope="session")
def gateway(network: str) -> Iterator[str]:
    """This host's address on the session's network, where pods reach what runs on the host. A pod
    holding only podman's infra container keeps it up all session: netavark removes the network's
    bridge, and the address with it, once no container is attached."""
    anchor = f"{network}-anchor"
    podman("pod", "create", "--name", anchor, "--network", network)
    podman("pod", "start", anchor)
    try:
        yield json.loads(podman("network", "inspect", network).stdout)[0]["subnets"][0]["gateway"]
    finally:
        podman("pod", "rm", "--force", anchor, check=False)


@pytest.fixture(scope="session")
def apiserver(gateway: str) -> Iterator[EnvTest]:
    """A real kube-apiserver (tests/support/envtest.py) on the network's gateway, with Knative's
    CRDs, and a token for each service account of the platform's: pods call it as a cluster's
    would (skips, saying how to build the binaries, without them, as the cluster tier does)."""
    why = missing_binaries()
    if why:
        pytest.skip(f"container tier, platform tests: {why}")
    accounts = [b["metadata"] for b in install_objects() if b["kind"] == "ServiceAccount"]
    env = EnvTest.start(address=gateway, service_accounts=[(m["namespace"], m["name"]) for m in accounts])
    try:
        install_knative(connect(str(env.kubeconfig)))
        yield env
    finally:
        env.stop()


@pytest.fixture(scope="session")
def installed(
    apiserver: EnvTest, runtime_image: str, ingress_image: str, egress_image: str, tools_image: str
) -> Platform:
    """``clrk install`` run (the real CLI) against the test API server with the images built here."""
    images = {"runtime": runtime_image, "ingress": ingress_image, "egress": egress_image}
    stack = Platform(apiserver, connect(str(apiserver.kubeconfig)), images, router_image=tools_image)
    stack.install()
    return stack
