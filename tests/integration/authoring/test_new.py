"""Every template, forked by ``clrk new`` into a temp folder, passes its own test; bad names and
taken folders are refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clrk.api.common import DNS_LABEL_RULE
from clrk.authoring import available_templates
from clrk.manifests import load_bundle
from tests.support.authoring_cli import clrk


@pytest.mark.parametrize("template", available_templates())
def test_a_fork_of_every_template_passes_its_own_test(template: str, tmp_path: Path) -> None:
    fork = tmp_path / "my-agent"
    ran = clrk("new", "my-agent", "--template", template, "--dir", str(fork))
    assert ran.exit_code == 0, ran.stderr
    assert f"Created agent my-agent from template {template}" in ran.stdout
    bundle = load_bundle([str(fork / "manifests")])
    assert bundle.manifests.warnings == []
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q"],
        cwd=fork,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "passed" in done.stdout and "failed" not in done.stdout
    assert "warning" not in done.stdout.lower(), done.stdout


def test_new_writes_to_dot_name_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ran = clrk("new", "my-agent")
    assert ran.exit_code == 0, ran.stderr
    assert (tmp_path / "my-agent" / "agent.sh").is_file()
    assert "  cd my-agent" in ran.stdout


def test_new_refuses_an_existing_folder(tmp_path: Path) -> None:
    (tmp_path / "my-agent").mkdir()
    (tmp_path / "my-agent" / "notes.txt").write_text("mine")
    ran = clrk("new", "my-agent", "--dir", str(tmp_path / "my-agent"))
    assert ran.exit_code == 1
    assert (
        ran.stderr
        == f"error: {tmp_path / 'my-agent'}: already exists and is not empty; choose another --dir or remove it\n"
    )
    assert [p.name for p in (tmp_path / "my-agent").iterdir()] == ["notes.txt"]


def test_new_refuses_a_name_kubernetes_would_reject(tmp_path: Path) -> None:
    ran = clrk("new", "My_Agent", "--dir", str(tmp_path / "x"))
    assert ran.exit_code == 2
    flat = " ".join(ran.stderr.replace("│", " ").split())
    assert "'My_Agent' cannot name an agent" in flat
    assert " ".join(DNS_LABEL_RULE.split()) in flat
    assert not (tmp_path / "x").exists()


def test_new_refuses_an_unknown_template(tmp_path: Path) -> None:
    ran = clrk("new", "my-agent", "--template", "cobol", "--dir", str(tmp_path / "x"))
    assert ran.exit_code == 2
    assert "no template 'cobol'" in ran.stderr
