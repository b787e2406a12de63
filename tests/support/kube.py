"""The cluster tier's handle on its test cluster (a real kube-apiserver from :mod:`tests.support.envtest`)
and the CLI's cluster commands, as the tests in ``tests/integration/cluster`` drive them."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner, Result

from clrk.cli import cluster as commands
from clrk.cluster import Cluster
from clrk.cluster.connecting import connect
from clrk.cluster.installing import wait_established
from clrk.manifests.documents import load_all
from tests.support.envtest import EnvTest

__all__ = [
    "AGENT",
    "Kube",
    "cli_app",
    "eventually",
    "impersonating",
    "install_knative",
    "knative_crds",
    "platform_key",
    "write_agent",
]

REPO = Path(__file__).resolve().parents[2]
SHARED_CRDS = REPO / "tests" / "data" / "crds"


def cli_app() -> typer.Typer:
    """The cluster commands, registered as app.py registers them."""
    app = typer.Typer(pretty_exceptions_enable=False)
    for command in (commands.apply, commands.delete, commands.get, commands.logs, commands.install):
        app.command()(command)
    return app


@dataclass
class Kube:
    """The test cluster: its kubeconfig, a client, and the CLI bound to it."""

    env: EnvTest
    cluster: Cluster

    @property
    def kubeconfig(self) -> str:
        return str(self.env.kubeconfig)

    def clrk(self, *args: str, ok: bool = True) -> Result:
        result = CliRunner().invoke(cli_app(), [*args, "--kubeconfig", self.kubeconfig])
        if ok and result.exit_code != 0:
            raise AssertionError(f"clrk {' '.join(args)} failed: {result.output}") from result.exception
        return result

    def read(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return self.cluster.read(self.cluster.resource(api_version, kind), name, namespace)

    def apply_raw(self, body: dict[str, Any], manager: str, force: bool = False) -> dict[str, Any]:
        resource = self.cluster.resource(body["apiVersion"], body["kind"])
        return dict(resource.server_side_apply(body=body, field_manager=manager, force_conflicts=force).to_dict())


def eventually(check: Callable[[], Any], timeout: float = 40.0) -> Any:
    """``check()``'s first truthy value, asked every 0.2 s (the operator acts on its own time);
    AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError(f"not true after {timeout:g}s")


def impersonating(kube: Kube, user: str) -> Cluster:
    """A client of the test cluster acting as ``user`` (a service account's RBAC, tested as is)."""
    cluster = connect(kube.kubeconfig)
    cluster.api.set_default_header("Impersonate-User", user)  # type: ignore[no-untyped-call]
    return cluster


def platform_key(kube: Kube) -> bytes:
    """The platform key the installed platform holds (Secret clrk-system/clrk-platform-key), as
    the ingress reads it from its mounted file: what schedule tokens and namespace keys come from."""
    secret = kube.read("v1", "Secret", "clrk-platform-key", "clrk-system")
    assert secret, "the platform is not installed on the test API server"
    return base64.b64decode(secret["data"]["key"]).strip()


AGENT = """\
apiVersion: clrk.dev/v1alpha1
kind: TaskAgent
metadata:
  name: {name}
  namespace: {namespace}
spec:
  template:
    spec:
      image: {image}
      command: [/bin/sh, -c, cat]
"""


def write_agent(folder: Path, namespace: str, name: str = "bot", image: str = "example.com/bot:1") -> Path:
    """A TaskAgent manifest (``AGENT``) written to ``folder/NAME.yaml``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(AGENT.format(namespace=namespace, name=name, image=image))
    return path


def knative_crds() -> list[dict[str, Any]]:
    """The upstream Knative CRDs, made acceptable to a 1.20 API server."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            out = {
                k: strip(v)
                for k, v in node.items()
                if k != "x-kubernetes-validations" and not (k == "default" and v == "")
            }
            # A list-map key must have a default or be required: the default just went, so require it.
            keys = out.get("x-kubernetes-list-map-keys")
            if keys and isinstance(out.get("items"), dict):
                out["items"]["required"] = sorted({*out["items"].get("required", []), *keys})
            return out
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    out = []
    for path in sorted(SHARED_CRDS.glob("*.yaml")):
        out += [strip(doc) for doc in load_all(path.read_text()) if doc]
    assert out, f"no Knative CRDs in {SHARED_CRDS}"
    return out


def install_knative(cluster: Cluster) -> None:
    """Knative's CRDs (Serving's Service; Eventing's PingSource, Broker and Trigger), and the
    namespace and ConfigMaps of Knative Serving that `clrk install` patches: what a cluster with
    Knative installed holds (no controllers: nothing reconciles)."""
    crds = cluster.resource("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    for crd in knative_crds():
        crds.server_side_apply(body=crd, field_manager="test")
    wait_established(cluster, [crd["metadata"]["name"] for crd in knative_crds()])
    # What a real Knative Serving install leaves for `clrk install` to patch.
    cluster.resource("v1", "Namespace").server_side_apply(
        body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "knative-serving"}}, field_manager="test"
    )
    for name in ("config-features", "config-defaults"):
        cluster.resource("v1", "ConfigMap").server_side_apply(
            body={
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "knative-serving"},
                "data": {"_example": "see knative docs"},
            },
            field_manager="knative-install",
        )
