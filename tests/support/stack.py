"""The platform as ``clrk install`` leaves it on a test API server, run by podman.

The API server (:class:`tests.support.envtest.EnvTest`) listens on the gateway of the session's
podman network, so that pods reach it there (as ``KUBERNETES_SERVICE_HOST``) with the token of
their service account, under the RBAC ``clrk install`` applied. :class:`Platform` drives the real
CLI against it and turns what it holds into pods (:mod:`tests.support.kubeplay`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from clrk.cluster import Cluster
from tests.support.envtest import EnvTest
from tests.support.kube import cli_app
from tests.support.kubeplay import Objects, Workload, snapshot
from tests.support.podman import Pod, Pods

__all__ = ["Platform", "suffix"]


def suffix() -> str:
    """A pod-name suffix, as a ReplicaSet adds one: names stay unique on this host."""
    return uuid.uuid4().hex[:5]


@dataclass
class Platform:
    """clrk installed on the test API server with the images built here."""

    env: EnvTest
    cluster: Cluster
    images: dict[str, str]
    """The platform's images as installed: runtime, ingress, egress."""
    router_image: str
    installed: list[dict[str, Any]] = field(default_factory=list)
    """What the API server held right after ``clrk install``, before any apply."""

    def clrk(self, *args: str) -> str:
        """Run a cluster command of the real CLI against the test API server; its output."""
        result = CliRunner().invoke(cli_app(), [*args, "--kubeconfig", str(self.env.kubeconfig)])
        if result.exit_code != 0:
            raise AssertionError(f"clrk {' '.join(args)} failed: {result.output}") from result.exception
        return result.output

    def install(self) -> None:
        self.clrk(
            "install",
            "--runtime-image",
            self.images["runtime"],
            "--ingress-image",
            self.images["ingress"],
            "--egress-image",
            self.images["egress"],
        )
        self.installed = snapshot(self.cluster)

    def objects(self, items: list[dict[str, Any]], workdir: Path, images: Mapping[str, str] | None = None) -> Objects:
        """``items`` (a :func:`~tests.support.kubeplay.snapshot`) as pods would see them here;
        ``images``: agent images as rendered → the ones built here."""
        return Objects(
            items,
            workdir,
            images=dict(images or {}),
            api_server=(self.env.address, self.env.port),
            api_ca=self.env.ca_path,
            tokens=self.env.tokens,
            router_image=self.router_image,
        )

    def play(self, pods: Pods, workload: Workload) -> Pod:
        return pods.play(workload.pod, workload.documents, workload.aliases)

    @staticmethod
    def wait_ready(pod: Pod, ready: Callable[[], bool], what: str, timeout: float = 90) -> None:
        """Every init container of ``pod`` exited 0, then ``ready()`` holds while every container
        runs (a container that stops fails at once, showing the pod)."""
        spec = pod.manifest["spec"]
        for init in spec.get("initContainers", []):
            assert pod.wait_exit(init["name"], timeout) == 0, pod.report()

        def check() -> bool:
            for container in spec["containers"]:
                if pod.state(container["name"])[0] in ("exited", "stopped"):
                    raise AssertionError(f"{pod.container(container['name'])} stopped before {what}\n{pod.report()}")
            return ready()

        pod.wait_until(check, what, timeout)
