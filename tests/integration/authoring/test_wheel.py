"""From an installed wheel, ``clrk new`` finds its templates as package data (clrk/_templates)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SCRIPT = """
import json, sys
from pathlib import Path
from clrk.authoring import create_fork, templates_dir
fork = create_fork("from-wheel", "python", Path(sys.argv[1]))
print(json.dumps({"templates": str(templates_dir()), "files": fork.files}))
"""


def test_a_wheel_carries_the_templates_and_new_finds_them(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(REPO)],
        capture_output=True,
        check=True,
    )
    (wheel,) = (tmp_path / "dist").glob("clrk-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)  # as pip would, but without the executable bits: new restores them
    env = dict(os.environ, PYTHONPATH=str(site))
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "from-wheel")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=tmp_path,
    )
    report = json.loads(done.stdout)
    assert report["templates"] == str(site / "clrk" / "_templates")
    assert {".dockerignore", "agent.py", "tests/bin/claude", "manifests/taskagent.yaml"} <= set(report["files"])
    fork = tmp_path / "from-wheel"
    assert os.access(fork / "agent.py", os.X_OK)
    assert os.access(fork / "tests" / "bin" / "claude", os.X_OK)
    assert "from-wheel" in (fork / "manifests" / "taskagent.yaml").read_text()
