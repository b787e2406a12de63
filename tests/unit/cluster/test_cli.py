"""The cluster commands adapt options to core calls; what needs no cluster is checked here."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from clrk.cli import cluster as commands
from clrk.errors import BuildError, SpecError
from clrk.manifests.documents import load_all

REPO = Path(__file__).resolve().parents[3]


def run(*args: str) -> Result:
    app = typer.Typer(pretty_exceptions_enable=False)
    for command in (commands.apply, commands.install, commands.build, commands.get):
        app.command()(command)
    return CliRunner().invoke(app, list(args))


def test_client_dry_run_compiles_without_a_cluster() -> None:
    result = run("apply", "-f", str(REPO / "examples" / "jq-bot" / "manifests"), "--dry-run=client",
                 "--kubeconfig", "/nonexistent")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Service default/jq-bot (client dry run)" in result.output


def test_install_render_prints_the_platform() -> None:
    result = run("install", "--render")
    docs = load_all(result.output)
    assert docs[0]["kind"] == "CustomResourceDefinition"
    assert any(d["kind"] == "Deployment" and d["metadata"]["name"] == "clrk-egress" for d in docs)


def test_build_without_docker_engine_fails_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    result = run("build", str(tmp_path), "--push", "registry.test", "--engine", "docker")
    assert isinstance(result.exception, BuildError)
    message = str(result.exception)
    assert "docker" in message.lower() and ("DOCKER_HOST" in message or "PATH" in message)


def test_get_knows_only_taskagents() -> None:
    result = run("get", "pods")
    assert isinstance(result.exception, SpecError)


def test_install_render_takes_images_and_the_cluster_domain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLRK_EGRESS_IMAGE", "reg.corp/egress:2")
    images = ["--runtime-image", "reg.corp/runtime:1", "--ingress-image", "reg.corp/ingress:1"]
    result = run("install", "--render", *images, "--cluster-domain", "corp.internal")
    assert result.exit_code == 0, result.output
    docs = load_all(result.output)
    deployments = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"}
    assert deployments["clrk-ingress"]["containers"][0]["image"] == "reg.corp/ingress:1"
    assert deployments["clrk-operator"]["containers"][0]["image"] == "reg.corp/ingress:1"
    assert {c["image"] for c in deployments["clrk-egress"]["containers"]} == {"reg.corp/egress:2"}
    (platform,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "clrk-platform"]
    assert platform["data"]["runtimeImage"] == "reg.corp/runtime:1"
    assert platform["data"]["clusterDomain"] == "corp.internal"


def test_client_dry_run_takes_the_runtime_image() -> None:
    result = run("apply", "-f", str(REPO / "examples" / "jq-bot" / "manifests"), "--dry-run=client",
                 "--runtime-image", "reg.corp/runtime:1", "--kubeconfig", "/nonexistent")  # fmt: skip
    assert result.exit_code == 0, result.output
