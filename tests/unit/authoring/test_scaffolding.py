"""``clrk new``'s core: names, rendering, where a fork may go, and what every template holds."""

from __future__ import annotations

import re
import stat
import tomllib
from pathlib import Path

import pytest

from clrk.api.common import DNS_LABEL_RULE
from clrk.authoring import (
    PLACEHOLDER,
    ScaffoldError,
    TemplateFile,
    available_templates,
    check_name,
    clrk_checkout,
    create_fork,
    next_steps,
    read_template,
    render_fork,
    scaffolding,
    templates_dir,
)
from clrk.cli.authoring import TEMPLATES_HELP
from clrk.manifests import load_bundle

REPO = Path(__file__).resolve().parents[3]
TEMPLATES = ["claude-stream", "jq-bot", "node", "python", "shell"]
ENTRYPOINTS = {
    "jq-bot": "agent.sh",
    "shell": "agent.sh",
    "python": "agent.py",
    "node": "agent.mjs",
    "claude-stream": "agent.sh",
}


def test_the_templates_are_the_repositorys_in_an_editable_install() -> None:
    assert templates_dir() == REPO / "templates"
    assert available_templates() == TEMPLATES


def test_the_clis_help_names_every_template() -> None:
    assert TEMPLATES_HELP == "jq-bot, shell, python, node or claude-stream."
    assert sorted(TEMPLATES_HELP.rstrip(".").replace(" or ", ", ").split(", ")) == TEMPLATES


@pytest.mark.parametrize("name", ["a", "my-bot", "bot2", "x" * 58])
def test_names_kubernetes_accepts(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["9lives", "x" * 59])
def test_names_that_cannot_name_the_agents_service_are_refused(name: str) -> None:
    """Its own manifests would be rejected: clrk-<name> must be a Service name too."""
    with pytest.raises(ScaffoldError, match="must start with a letter and have at most 58 characters"):
        check_name(name)


@pytest.mark.parametrize("name", ["", "My-Bot", "my_bot", "-bot", "bot-", "my.bot", "x" * 64, "ns/bot"])
def test_names_kubernetes_rejects_quote_the_rule(name: str) -> None:
    with pytest.raises(ScaffoldError) as caught:
        check_name(name)
    assert caught.value.option == "NAME"
    assert DNS_LABEL_RULE in str(caught.value)
    assert repr(name) in str(caught.value)


def test_rendering_puts_the_name_in_text_and_leaves_binaries_alone() -> None:
    files = [
        TemplateFile("a.txt", f"name={PLACEHOLDER} again {PLACEHOLDER}".encode(), False),
        TemplateFile("logo.bin", b"\xff\xfe{{name}}\x00", False),
        TemplateFile("run", b"#!/bin/sh\necho {{name}}\n", False),
    ]
    text, binary, script = render_fork("my-bot", files)
    assert text.content == b"name=my-bot again my-bot"
    assert binary.content == b"\xff\xfe{{name}}\x00"
    assert script.executable, "a script is executable even where packaging lost the bit"
    assert not text.executable


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_file_of_a_fork_has_the_name_and_no_placeholder(template: str, tmp_path: Path) -> None:
    fork = create_fork("my-bot", template, tmp_path / "my-bot")
    assert fork.path == tmp_path / "my-bot"
    for relative in fork.files:
        text = (fork.path / relative).read_text()
        assert "{{" not in text, f"{template}/{relative}: a placeholder is left"
    for relative in ("Dockerfile", "README.md", "manifests/taskagent.yaml", "pytest.ini", "tests/conftest.py"):
        assert relative in fork.files
    for relative in (ENTRYPOINTS[template], "tests/bin/claude"):
        mode = (fork.path / relative).stat().st_mode
        assert mode & stat.S_IXUSR and mode & stat.S_IXOTH, f"{relative} lost its executable bit"
    assert "my-bot" in (fork.path / "README.md").read_text()


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_forks_manifests_load_cleanly_and_point_at_its_entrypoint(template: str, tmp_path: Path) -> None:
    fork = create_fork("my-bot", template, tmp_path / "my-bot")
    bundle = load_bundle([str(fork.path / "manifests")])
    assert bundle.manifests.warnings == []
    (agent,) = bundle.manifests.agents
    assert agent.ref == "default/my-bot"
    assert agent.container.image == "registry.example.com/my-bot:0.1.0"
    assert agent.env["ANTHROPIC_API_KEY"] == "clrk-injected-by-proxy"
    assert agent.env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    context = bundle.contexts["default/my-bot"]
    assert context.path == fork.path
    assert bundle.argv(agent) == [f"/usr/local/bin/{ENTRYPOINTS[template]}"]
    assert [(c.source, c.destination) for c in context.image.copies] == [
        (ENTRYPOINTS[template], f"/usr/local/bin/{ENTRYPOINTS[template]}")
    ]
    (policy,) = bundle.manifests.policies
    assert policy.metadata.name == "my-bot"
    assert policy.spec.agents == ["my-bot"]
    assert (policy.spec.host, policy.spec.header) == ("api.anthropic.com", "x-api-key")
    assert (policy.spec.secret_key_ref.name, policy.spec.secret_key_ref.key) == ("anthropic-credentials", "api-key")


def test_templates_share_their_harness_and_policy_word_for_word() -> None:
    def text(template: str, path: str) -> str:
        return (REPO / "templates" / template / path).read_text()

    for path in ("manifests/credentialinjectionpolicy.yaml", "pytest.ini", ".dockerignore"):
        assert {text(t, path) for t in TEMPLATES} == {text("jq-bot", path)}, path
    conftests = {t: text(t, "tests/conftest.py") for t in TEMPLATES}
    for template, conftest in conftests.items():
        line = f'ENTRYPOINT = "{ENTRYPOINTS[template]}"'
        assert line in conftest
        assert conftest.replace(line, "") == conftests["jq-bot"].replace('ENTRYPOINT = "agent.sh"', "")


def _code(path: Path) -> str:
    return "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))


def _claude_stage(code: str) -> str:
    return code[code.index("FROM ${DEBIAN_IMAGE} AS claude") : code.index("\nFROM ${DEBIAN_IMAGE}\n")]


def test_dockerfiles_build_on_a_debian_named_by_a_build_arg() -> None:
    """Debian publishes amd64 and arm64 images; tests/containers builds them on a local base."""
    for template in TEMPLATES:
        lines = _code(REPO / "templates" / template / "Dockerfile").splitlines()
        assert lines[0] == "ARG DEBIAN_IMAGE=debian:trixie-slim", template
        assert [x for x in lines if x.startswith("FROM")] == ["FROM ${DEBIAN_IMAGE} AS claude", "FROM ${DEBIAN_IMAGE}"]


def test_the_claude_cli_is_the_pinned_one_checked_by_checksum_for_both_architectures() -> None:
    """One stage, word for word in every template and the example: the binary of the
    claude-agent-sdk wheel pyproject.toml pins, downloaded from PyPI (or taken from the build
    context) and checked against PyPI's SHA-256 of the wheel for the architecture being built."""
    stage = _claude_stage(_code(REPO / "examples" / "jq-bot" / "Dockerfile"))
    for template in TEMPLATES:
        code = _code(REPO / "templates" / template / "Dockerfile")
        assert _claude_stage(code) == stage, template
        rest = code.replace(stage, "")
        for download in ("curl", "wget", "ADD ", "pip ", "npm "):
            assert download not in rest, f"{template}/Dockerfile: {download} outside the checked stage"
    (pin,) = [
        d
        for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
        if d.startswith("claude-agent-sdk==")
    ]
    version = pin.split("==")[1]
    lock = (REPO / "platform" / "image-requirements.txt").read_text()
    pypi_hashes = re.search(
        rf"^claude-agent-sdk=={re.escape(version)} \\\n((?:    --hash=sha256:\w+.*\n)+)", lock, re.M
    )
    assert pypi_hashes, "platform/image-requirements.txt pins the same wheel (hack/lock-images.py)"
    hashes = re.findall(r"sha256:(\w+)", pypi_hashes.group(1))
    assert stage.count("curl ") == 1 and "sha256sum -c" in stage
    for arch, machine in (("amd64", "x86_64"), ("arm64", "aarch64")):
        wheel = re.escape(f"claude_agent_sdk-{version}-py3-none-manylinux_2_17_{machine}.whl")
        found = re.search(rf"{arch}\) url=\S+/{wheel};\s*\\\s*sha256=(\w+)", stage)
        assert found, f"no pinned wheel for {arch}"
        assert found.group(1) in hashes, f"{arch}: not the SHA-256 PyPI lists for the wheel"


def test_an_empty_folder_is_filled_in_place(tmp_path: Path) -> None:
    inode = tmp_path.stat().st_ino
    fork = create_fork("my-bot", "shell", tmp_path)
    assert (tmp_path / "agent.sh").is_file()
    assert fork.path == tmp_path
    assert tmp_path.stat().st_ino == inode, "a shell whose working folder it is keeps a valid one"


def _failing_write(folder: Path, files: object) -> None:
    (folder / "half-written").write_text("")
    raise OSError("disk full")


def test_a_failed_write_leaves_an_empty_folder_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scaffolding, "_write", _failing_write)
    with pytest.raises(OSError, match="disk full"):
        create_fork("my-bot", "shell", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_no_new_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scaffolding, "_write", _failing_write)
    with pytest.raises(OSError, match="disk full"):
        create_fork("my-bot", "shell", tmp_path / "my-bot")
    assert list(tmp_path.iterdir()) == []


def test_a_non_empty_folder_is_refused_and_left_untouched(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ScaffoldError, match="already exists and is not empty"):
        create_fork("my-bot", "shell", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_a_file_in_the_way_is_refused(tmp_path: Path) -> None:
    (tmp_path / "my-bot").write_text("")
    with pytest.raises(ScaffoldError, match="is not a folder"):
        create_fork("my-bot", "shell", tmp_path / "my-bot")


def test_a_fork_inside_clrks_own_checkout_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "platform" / "clrk").mkdir(parents=True)
    (tmp_path / "platform" / "clrk" / "__init__.py").write_text("")
    assert clrk_checkout(tmp_path / "examples" / "x") == tmp_path
    with pytest.raises(ScaffoldError, match="inside clrk's own repository"):
        create_fork("my-bot", "shell", tmp_path / "my-bot")
    assert not (tmp_path / "my-bot").exists()
    assert clrk_checkout(REPO / "anything") == REPO


def test_an_unknown_template_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError) as caught:
        create_fork("my-bot", "rust", tmp_path / "my-bot")
    assert caught.value.option == "--template"
    assert "jq-bot, node, python, shell" in str(caught.value)


def test_a_missing_parent_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match="no such folder"):
        create_fork("my-bot", "shell", tmp_path / "nope" / "my-bot")


def test_reading_a_template_skips_caches(tmp_path: Path) -> None:
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (tmp_path / "a.py").write_text("")
    (tmp_path / "b.sh").write_text("#!/bin/sh\n")
    (tmp_path / "b.sh").chmod(0o755)
    assert [(f.path, f.executable) for f in read_template(tmp_path)] == [("a.py", False), ("b.sh", True)]


def test_next_steps_show_the_relative_path_and_the_commands(tmp_path: Path) -> None:
    fork = create_fork("my-bot", "python", tmp_path / "my-bot")
    lines = next_steps(fork, tmp_path)
    assert "in my-bot" in lines[0]
    assert "  cd my-bot" in lines
    assert any(
        "clrk dev --apply manifests --secret anthropic-credentials=ANTHROPIC_API_KEY:api-key" in x for x in lines
    )
    assert any("clrk invoke my-bot" in x for x in lines)
