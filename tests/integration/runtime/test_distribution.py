"""clrk-runtime stands alone: its wheel, installed by itself into a fresh virtualenv (no clrk, no
dev extras), serves an agent. This is the dependency set the runtime image installs
(runtime/Dockerfile installs ./runtime), proven on every test run rather than on a first deploy."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.support.runtime import agent, shim_port, shim_process

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def runtime_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    build = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(REPO / "runtime")]
    subprocess.run(build, capture_output=True, check=True)
    (wheel,) = out.glob("clrk_runtime-*.whl")
    return wheel


@pytest.fixture(scope="module")
def fresh_venv(runtime_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "shim"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    done = subprocess.run([*pip, str(runtime_wheel)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return venv


def test_the_wheel_holds_the_runtime_alone(runtime_wheel: Path) -> None:
    names = zipfile.ZipFile(runtime_wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"clrk_runtime"}
    assert "clrk_runtime/protocol/envelope.py" in names
    assert "clrk_runtime/launching/spawn_server.py" in names, "the spawner's program ships as a file"


@pytest.mark.timeout(600)  # the first run downloads the runtime's dependencies
async def test_a_fresh_venv_with_only_the_runtime_serves_an_agent(fresh_venv: Path, shim_root: Path) -> None:
    python = fresh_venv / "bin" / "python"
    missing = subprocess.run([str(python), "-c", "import clrk"], capture_output=True, text=True)
    assert "No module named 'clrk'" in missing.stderr, "the control plane must not come along"
    shim = str(fresh_venv / "bin" / "clrk-shim")
    async with shim_process(shim_root, "--sandbox", "plain", "--", agent("echo.sh"), executable=shim) as process:
        port = await shim_port(process)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            response = await client.post("/", json={"from": "a fresh venv"})
        process.terminate()
        assert await process.wait() == 0
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"from": "a fresh venv"}
