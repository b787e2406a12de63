"""The repository's shape: platform/ and runtime/ are folders, never packages; clrk's wheel holds
clrk alone and depends on clrk-runtime (its own distribution) at the same version."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_import_platform_is_still_the_standard_library() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import platform, sysconfig; print(platform.__file__); print(sysconfig.get_paths()['stdlib'])",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert Path(out[0]).parent == Path(out[1])
    assert not (REPO / "platform" / "__init__.py").exists()
    assert not (REPO / "runtime" / "__init__.py").exists()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(REPO),
        ],
        capture_output=True,
        check=True,
    )
    (built,) = out.glob("clrk-*.whl")
    return built


def test_wheel_top_level_packages(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    names = archive.namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"clrk"}, "clrk_runtime is its own distribution (runtime/pyproject.toml)"
    assert "clrk/_templates/README.md" in names, "templates ship as package data"
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    text = archive.read(metadata).decode()
    version = next(line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("Version: "))
    assert f"Requires-Dist: clrk-runtime=={version}" in text.splitlines()


def test_runtime_never_imports_clrk() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "clrk_runtime never imports clrk KEPT" in result.stdout
