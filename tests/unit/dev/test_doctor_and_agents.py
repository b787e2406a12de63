from __future__ import annotations

from pathlib import Path

import pytest

from clrk.dev.agents import copy_binds, runtime_settings
from clrk.dev.doctor import check, requirements
from clrk.manifests import load_bundle
from clrk.manifests.dockerfiles import read_build_context

REPO = Path(__file__).resolve().parents[3]


def test_requirements_from_run_lines() -> None:
    reqs = requirements(
        [
            "apk add --no-cache bash jq=1.7-r0 ca-certificates libstdc++ \\\n"
            " && npm install -g @anthropic-ai/claude-code@2.1.331",
            "apt-get update && apt-get install -y --no-install-recommends ripgrep git python3-dev",
            "pip install requests",
        ]
    )
    assert [(r.command, r.package) for r in reqs] == [
        ("bash", "bash"),
        ("jq", "jq"),
        ("claude", "@anthropic-ai/claude-code"),
        ("rg", "ripgrep"),
        ("git", "git"),
    ]


def test_requirements_from_files_put_into_a_bin_folder() -> None:
    """How the templates install the pinned Claude CLI from another build stage; RUN's own
    flags, environment assignments and redirections are not commands or packages."""
    reqs = requirements(
        [
            "--mount=type=bind,from=claude,source=/claude,target=/mnt/claude \\\n"
            "    install -m 0755 /mnt/claude /usr/local/bin/claude",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bash jq >/dev/null 2>&1",
            "ln -sf /opt/tool/bin/tool /usr/bin/tool && cp a.conf /etc/a.conf && install -d /usr/local/bin/",
        ]
    )
    assert [(r.command, r.package, r.installer) for r in reqs] == [
        ("claude", "/usr/local/bin/claude", "install"),
        ("bash", "bash", "apt"),
        ("jq", "jq", "apt"),
        ("tool", "/usr/bin/tool", "ln"),
    ]


@pytest.mark.parametrize(
    "folder", ["examples/jq-bot", *(f"templates/{t}" for t in ("jq-bot", "shell", "python", "node"))]
)
def test_every_agent_dockerfile_names_the_claude_cli(folder: str) -> None:
    """``clrk dev`` stages the tools the image installs where sandboxes can run them: claude too."""
    commands = [r.command for r in requirements(read_build_context(REPO / folder).image.run)]
    assert commands[0] == "claude"


def test_check_finds_and_misses(tmp_path: Path) -> None:
    tool = tmp_path / "jq"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    results = check(requirements(["apk add jq nosuchtool-xyz"]), path=str(tmp_path))
    assert [(r.requirement.command, r.found) for r in results] == [("jq", str(tool)), ("nosuchtool-xyz", None)]


def test_jq_bot_runs_from_its_build_context() -> None:
    bundle = load_bundle([str(REPO / "examples" / "jq-bot" / "manifests")])
    agent = bundle.manifests.agents[0]
    settings = runtime_settings(
        agent,
        bundle,
        egress_proxy="127.0.0.1:1",
        token_key=b"k",
        ca_bundle=Path("/ca.pem"),
        sandbox="plain",
        agent_path="/usr/bin",
        binds=copy_binds(bundle.contexts[agent.ref]),
    )
    source = str(REPO / "examples" / "jq-bot" / "agent.sh")
    assert settings.command == [source], "the COPY destination runs from its host source"
    assert settings.binds == [f"{source}:/usr/local/bin/agent.sh"]
    assert settings.timeout == 100
    assert settings.warm_pool == agent.spec.warm_pool_size
    assert settings.warm_start is True, "spec.warmStart: the shim starts the agent ahead"
    assert settings.agent_env["ANTHROPIC_API_KEY"] == "clrk-injected-by-proxy"
    cold = agent.model_copy(update={"spec": agent.spec.model_copy(update={"warm_start": False})})
    binds = copy_binds(bundle.contexts[agent.ref])
    off = runtime_settings(
        cold,
        bundle,
        egress_proxy="127.0.0.1:1",
        token_key=b"k",
        ca_bundle=Path("/ca.pem"),
        sandbox="plain",
        agent_path="/usr/bin",
        binds=binds,
    )
    assert off.warm_start is False


def test_staging_makes_copies_any_user_can_read(tmp_path: Path) -> None:
    from clrk.dev.staging import stage_bundle

    context = tmp_path / "private" / "agent"
    (context / "manifests").mkdir(parents=True)
    (tmp_path / "private").chmod(0o700)
    (context / "Dockerfile").write_text('FROM alpine\nCOPY run.sh /app/run.sh\nENTRYPOINT ["/app/run.sh"]\n')
    (context / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (context / "run.sh").chmod(0o700)
    (context / "manifests" / "agent.yaml").write_text(
        "apiVersion: clrk.dev/v1alpha1\nkind: TaskAgent\nmetadata:\n  name: a\n"
        "  annotations: {clrk.dev/build-context: ..}\nspec:\n  template: {spec: {image: 'x:1'}}\n"
    )
    ca = tmp_path / "private" / "ca.pem"
    ca.write_text("CERT")
    bundle = load_bundle([str(context / "manifests")])
    tools = tmp_path / "private" / "bin"
    tools.mkdir()
    (tools / "clrk-test-tool").write_text("#!/bin/sh\necho tool\n")
    (tools / "clrk-test-tool").chmod(0o755)
    (context / "Dockerfile").write_text(
        "FROM alpine\nRUN apk add clrk-test-tool && apk add clrk-test-tool bash\n"
        'COPY run.sh /app/run.sh\nENTRYPOINT ["/app/run.sh"]\n'
    )
    bundle = load_bundle([str(context / "manifests")])
    stage = stage_bundle(bundle, ca, f"{tools}:/usr/bin:/bin", other_user=True)
    try:
        staged = Path(stage.binds["default/a"]["/app/run.sh"])
        assert staged.read_text() == "#!/bin/sh\necho hi\n"
        assert staged.stat().st_mode & 0o005 == 0o005, "others may read and run it"
        assert stage.ca_bundle.read_text() == "CERT"
        assert stage.ca_bundle.stat().st_mode & 0o004
        staged_tool = stage.root / "bin" / "clrk-test-tool"
        assert staged_tool.read_text() == "#!/bin/sh\necho tool\n", "a tool out of the agent user's reach is staged"
        assert stage.path == f"{stage.root / 'bin'}:{tools}:/usr/bin:/bin"
        for parent in staged.parents:
            if parent == stage.root.parent:
                break
            assert parent.stat().st_mode & 0o001, f"{parent} is traversable"
    finally:
        stage.remove()
    assert not stage.root.exists()


def test_staging_leaves_tools_the_sandbox_user_finds_further_along_path(tmp_path: Path) -> None:
    """An image's python3 is the host's next python3 on PATH, not clrk's own interpreter (whose
    copy would not find its libraries), nor a pyenv shim out of reach."""
    import sys
    import tempfile

    from clrk.dev import staging

    private = tmp_path / "private"
    (private / "shims").mkdir(parents=True)
    private.chmod(0o700)
    shim = private / "shims" / "python3"
    shim.write_text("#!/bin/sh\nexec pyenv exec python3\n")
    shim.chmod(0o755)
    with tempfile.TemporaryDirectory(dir="/var/tmp") as folder:
        public = Path(folder)
        public.chmod(0o755)
        (public / "python3").write_text("#!/bin/sh\n")
        (public / "python3").chmod(0o755)
        own = str(Path(sys.executable).parent)
        assert staging._tool("python3", f"{own}:{private / 'shims'}:{public}") is None
    assert staging._tool("python3", f"{own}:{private / 'shims'}") == str(shim), "none in reach: the first is staged"


def test_clrk_dev_refuses_to_start_without_the_images_tools(tmp_path: Path) -> None:
    import pytest

    from clrk.dev.serving import DevServer
    from clrk.dev.settings import DevSettings
    from clrk.errors import ClrkError

    settings = DevSettings(
        apply=[str(REPO / "examples" / "jq-bot" / "manifests")],
        secrets=["anthropic-credentials=K:api-key"],
        agent_path=str(tmp_path),
        state_dir=tmp_path,
    )
    with pytest.raises(ClrkError) as info:
        DevServer(settings, environ={"K": "v"}).load()
    message = str(info.value)
    assert "default/jq-bot: claude (the image installs /usr/local/bin/claude with install)" in message
    assert "default/jq-bot: jq" in message
    assert "clrk doctor" in message


def test_clrk_dev_refuses_a_policy_whose_secret_is_not_given(tmp_path: Path) -> None:
    import sys

    import pytest

    from clrk.dev.serving import DevServer
    from clrk.dev.settings import DevSettings
    from clrk.errors import ClrkError

    tools = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"
    settings = DevSettings(
        apply=[str(REPO / "examples" / "jq-bot" / "manifests")], state_dir=tmp_path, agent_path=tools
    )
    with pytest.raises(ClrkError, match=r"spec.secretKeyRef: secret anthropic-credentials/api-key is not provided"):
        DevServer(settings, environ={}).load()
