"""`clrk build`'s engine: which one is chosen, what it says when there is none, and the podman
commands it runs, with stand-in `docker` and `podman` programs on PATH (no engine needed).

The stand-ins are small Python scripts that answer as the real ones do (``system info``, ``build``,
``manifest``, ``push``) and log their arguments, so python-on-whales runs for real in front of them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from python_on_whales import DockerClient
from typer.testing import CliRunner

from clrk.cli import cluster as commands
from clrk.cluster import building
from clrk.errors import BuildError

DIGEST = "sha256:" + "c" * 64
FAKE = f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *args]) + "\\n")
name = os.path.basename(sys.argv[0])
if args[:2] == ["system", "info"]:
    if os.environ.get("FAKE_" + name.upper() + "_DOWN"):
        sys.exit(name + ": Cannot connect to the daemon at unix:///nowhere.sock. Is it running?")
    print("{{}}")
elif args[:2] == ["buildx", "build"]:
    print("STEP 1/1: FROM scratch")
    failure = os.environ.get("FAKE_BUILD_FAILS")
    if failure:
        sys.exit(failure)
    print("Successfully tagged " + args[args.index("--tag") + 1])
elif args[:2] == ["manifest", "rm"]:
    sys.exit("Error: " + args[2] + os.environ.get("FAKE_NOT_A_LIST", ": image not known"))
elif args[:2] == ["manifest", "create"]:
    print("0123456789abcdef" * 4)
elif "--digestfile" in args:
    with open(args[args.index("--digestfile") + 1], "w") as out:
        out.write(os.environ.get("FAKE_DIGEST", "{DIGEST}"))
"""


class Fakes:
    """Stand-in programs in a folder that is the whole PATH; ``calls`` is what they were run with."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.folder = folder
        self.log = folder / "calls.jsonl"
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("PATH", str(folder))
        monkeypatch.setenv("FAKE_LOG", str(self.log))
        # python-on-whales' shared `docker` client remembers where it found `docker`: use a fresh one.
        self.docker = DockerClient(client_type="docker")
        monkeypatch.setattr(building, "docker", self.docker)

    def add(self, name: str, *, down: bool = False) -> None:
        path = self.folder / name
        path.write_text(FAKE)
        path.chmod(0o755)
        if down:
            self.monkeypatch.setenv(f"FAKE_{name.upper()}_DOWN", "1")

    @property
    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fakes:
    folder = tmp_path / "bin"
    folder.mkdir()
    return Fakes(folder, monkeypatch)


@pytest.fixture
def context(tmp_path: Path) -> Path:
    folder = tmp_path / "bot"
    folder.mkdir()
    (folder / "Dockerfile").write_text("FROM scratch\nCOPY agent.sh /agent.sh\n")
    (folder / "agent.sh").write_text("#!/bin/sh\necho hi\n")
    manifests = folder / "manifests"
    manifests.mkdir()
    (manifests / "taskagent.yaml").write_text(
        "apiVersion: clrk.dev/v1alpha1\nkind: TaskAgent\nmetadata:\n  name: bot\n"
        "  annotations:\n    clrk.dev/build-context: ..\n"
        "spec:\n  template:\n    spec:\n      image: bot  # pinned by clrk build\n"
    )
    return folder


def build(context: Path, *platforms: str, **options: Any) -> building.Built:
    lines: list[str] = []
    registry = options.pop("registry", "registry.test/me")
    return building.build_context(context, registry, list(platforms) or None, [context], lines.append, **options)


# --- which engine ------------------------------------------------------------------------------


def test_auto_without_docker_or_podman_names_both_and_what_to_install(fakes: Fakes) -> None:
    with pytest.raises(BuildError) as caught:
        building.choose_engine("auto")
    message = str(caught.value)
    assert "no `docker` command on PATH" in message and "no `podman` command on PATH" in message
    assert "buildx plugin" in message and "apt-get install podman" in message
    assert "\n" not in message


def test_auto_with_a_docker_cli_but_no_engine_and_no_podman(fakes: Fakes) -> None:
    fakes.add("docker", down=True)
    with pytest.raises(BuildError, match=r"no Docker engine answers \(`docker info`: docker: Cannot connect") as caught:
        building.choose_engine("auto")
    assert "no `podman` command on PATH" in str(caught.value) and "apt-get install podman" in str(caught.value)


def test_auto_takes_podman_when_no_docker_engine_answers(fakes: Fakes) -> None:
    fakes.add("docker", down=True)
    fakes.add("podman")
    assert building.choose_engine("auto").name == "podman"
    assert [call[:3] for call in fakes.calls] == [["docker", "system", "info"], ["podman", "system", "info"]]


def test_auto_prefers_a_docker_engine_that_answers(fakes: Fakes) -> None:
    fakes.add("docker")
    fakes.add("podman")
    assert building.choose_engine("auto").name == "docker"
    assert [call[0] for call in fakes.calls] == ["docker"]


def test_podman_asked_for_but_not_installed(fakes: Fakes) -> None:
    fakes.add("docker")
    with pytest.raises(BuildError, match=r"^no `podman` command on PATH: install podman \(Debian/Ubuntu: `apt-get"):
        building.choose_engine("podman")


def test_podman_that_does_not_work_says_what_podman_said(fakes: Fakes) -> None:
    fakes.add("podman", down=True)
    with pytest.raises(BuildError, match=r"podman does not work here \(`podman info`: podman: Cannot connect"):
        building.choose_engine("podman")


def test_docker_asked_for_without_an_engine_points_at_podman_too(fakes: Fakes) -> None:
    fakes.add("docker", down=True)
    fakes.add("podman")
    with pytest.raises(BuildError) as caught:
        building.choose_engine("docker")
    message = str(caught.value)
    assert message.startswith("no Docker engine answers") and "DOCKER_HOST" in message
    assert "--engine podman" in message


def test_host_platform_names_architectures_as_oci_does() -> None:
    assert building.host_platform("x86_64") == "linux/amd64"
    assert building.host_platform("aarch64") == "linux/arm64"
    assert building.host_platform("armv7l") == "linux/arm/v7"
    assert building.host_platform("ppc64le") == "linux/ppc64le"


# --- what podman is asked to do ----------------------------------------------------------------


def podman_calls(fakes: Fakes) -> list[list[str]]:
    return [call[1:] for call in fakes.calls if call[0] == "podman" and call[1:3] != ["system", "info"]]


def test_podman_builds_this_machines_platform_by_default_and_pins_the_pushed_digest(
    fakes: Fakes, context: Path
) -> None:
    fakes.add("podman")
    built = build(context, engine="podman")
    image = built.image.split("@")[0]
    assert built.image == f"{image}@{DIGEST}" and image.startswith("registry.test/me/bot:")
    (build_call, push_call) = podman_calls(fakes)
    assert build_call[:2] == ["buildx", "build"]
    assert build_call[build_call.index("--platform") + 1] == building.host_platform()
    assert build_call[build_call.index("--tag") + 1] == image
    assert push_call[0] == "push" and push_call[-2:] == [image, f"docker://{image}"]
    assert "--tls-verify=false" not in push_call, "registries.conf decides unless --insecure-registry"
    assert built.rewritten == [context / "manifests" / "taskagent.yaml"]
    assert f"image: {built.image}  # pinned by clrk build\n" in built.rewritten[0].read_text()


def test_podman_several_platforms_make_a_manifest_list_pushed_with_all_its_images(fakes: Fakes, context: Path) -> None:
    fakes.add("podman")
    built = build(context, "linux/amd64", "linux/arm64", engine="podman", insecure=True)
    image = built.image.split("@")[0]
    calls = podman_calls(fakes)
    tags = [call[call.index("--tag") + 1] for call in calls if call[:2] == ["buildx", "build"]]
    assert tags == [f"{image}-linux-amd64", f"{image}-linux-arm64"]
    assert ["manifest", "rm", image] in calls
    assert ["manifest", "create", image, *(f"containers-storage:{tag}" for tag in tags)] in calls
    (push,) = [call for call in calls if "--digestfile" in call]
    assert push[:3] == ["manifest", "push", "--all"] and "--tls-verify=false" in push
    assert push[-2:] == [image, f"docker://{image}"]
    assert built.image.endswith(f"@{DIGEST}")


def test_a_plain_image_holding_the_lists_name_is_untagged_not_removed(
    fakes: Fakes, context: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes.add("podman")
    monkeypatch.setenv("FAKE_NOT_A_LIST", ": image is not a manifest list")
    image = build(context, "linux/amd64", "linux/arm64", engine="podman").image.split("@")[0]
    calls = podman_calls(fakes)
    assert calls.index(["untag", image, image]) < next(
        i for i, c in enumerate(calls) if c[:2] == ["manifest", "create"]
    )
    assert not any(call[0] in ("rmi", "image") for call in calls)


def test_podman_without_push_builds_only(fakes: Fakes, context: Path) -> None:
    fakes.add("podman")
    built = build(context, engine="podman", registry=None)
    assert "@" not in built.image and built.rewritten == []
    assert [call[:2] for call in podman_calls(fakes)] == [["buildx", "build"]]


def test_a_digest_file_without_a_digest_is_an_error_not_a_pin(
    fakes: Fakes, context: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes.add("podman")
    monkeypatch.setenv("FAKE_DIGEST", "")
    before = (context / "manifests" / "taskagent.yaml").read_text()
    with pytest.raises(BuildError, match="pushed, but podman reported no digest"):
        build(context, engine="podman")
    assert (context / "manifests" / "taskagent.yaml").read_text() == before


def test_exec_format_error_on_a_foreign_platform_says_what_it_needs_in_one_line(
    fakes: Fakes, context: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes.add("podman")
    foreign = "linux/s390x" if building.host_platform() != "linux/s390x" else "linux/amd64"
    monkeypatch.setenv("FAKE_BUILD_FAILS", 'exec /bin/sh: exec format error\nError: building at STEP "RUN true"')
    with pytest.raises(BuildError) as caught:
        build(context, foreign, engine="podman")
    message = str(caught.value)
    assert "\n" not in message
    assert f"building for {foreign} on this {building.host_platform()} machine" in message
    assert "qemu-user-static" in message and "binfmt" in message


def test_other_build_failures_say_podmans_last_line(
    fakes: Fakes, context: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes.add("podman")
    monkeypatch.setenv("FAKE_BUILD_FAILS", 'Error: building at STEP "RUN false": exit status 1')
    with pytest.raises(BuildError, match=r'podman build for linux/\S+ failed: Error: building at STEP "RUN false"'):
        build(context, engine="podman")


# --- Docker, through the same stand-ins ---------------------------------------------------------


def test_docker_insecure_registry_goes_to_buildx_image_exporter(
    fakes: Fakes, context: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes.add("docker")

    def fake_build(context_path: Path, **kwargs: Any) -> None:
        calls.append(kwargs)
        Path(kwargs["metadata_file"]).write_text(json.dumps({"containerimage.digest": DIGEST}))

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(fakes.docker.buildx, "build", fake_build)
    built = build(context, insecure=True)
    (call,) = calls
    assert call["platforms"] == list(building.DEFAULT_PLATFORMS)
    assert call["push"] is False
    assert call["output"] == {"type": "image", "push": "true", "registry.insecure": "true"}
    assert built.image.endswith(f"@{DIGEST}")


# --- the command ---------------------------------------------------------------------------------


def test_the_build_command_maps_its_options(monkeypatch: pytest.MonkeyPatch, context: Path) -> None:
    seen: dict[str, Any] = {}

    def fake_build_context(*args: Any, **kwargs: Any) -> building.Built:
        seen.update(args=args, kwargs=kwargs)
        kwargs["progress"]("STEP 1/1: FROM scratch\n")
        return building.Built("registry.test/me/bot:0123@" + DIGEST, "0123")

    monkeypatch.setattr(building, "build_context", fake_build_context)
    app = typer.Typer(pretty_exceptions_enable=False)
    app.command()(commands.build)
    app.command()(commands.apply)  # two commands, so that typer keeps `build` as a subcommand
    argv = ["build", str(context), "--engine", "podman", "--insecure-registry", "--push", "registry.test/me"]
    result = CliRunner().invoke(app, [*argv, "--platform", "linux/arm64", "-f", "m.yaml"])
    assert result.exit_code == 0, result.output
    assert seen["args"][:4] == (context, "registry.test/me", ["linux/arm64"], [Path("m.yaml")])
    assert seen["kwargs"]["engine"] == "podman" and seen["kwargs"]["insecure"] is True
    assert result.stdout.splitlines()[-1] == "registry.test/me/bot:0123@" + DIGEST
    assert "STEP 1/1" in result.stderr and "STEP 1/1" not in result.stdout

    CliRunner().invoke(app, ["build", str(context)])
    assert seen["args"][1:4] == (None, None, [context]) and seen["kwargs"]["engine"] == "auto"
    assert seen["kwargs"]["insecure"] is False
