"""The cluster tier's handle on its test cluster (a real kube-apiserver from :mod:`tests.support.envtest`)
and the CLI's cluster commands, as the tests in ``tests/integration/cluster`` drive them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner, Result

from clrk.cli import cluster as commands
from clrk.cluster import Cluster
from tests.support.envtest import EnvTest

__all__ = ["AGENT", "Kube", "cli_app", "write_agent"]


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
