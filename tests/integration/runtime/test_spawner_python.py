"""``CLRK_PYTHON``: the argv prefix the spawner is started with, for images where ``sys.executable``
cannot start on its own (the runtime image's bundled Python needs its bundled loader, which only
the image's launcher knows). A shell script stands in for that launcher mode here."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx

from clrk_runtime.launching import spawn_server
from tests.support.runtime import agent, shim_port, shim_process


def _launcher(folder: Path) -> tuple[Path, Path]:
    """A stand-in for the launcher's ``--python`` mode: records its arguments, then execs this
    Python with the rest."""
    record = folder / "argv"
    launcher = folder / "launcher"
    launcher.write_text(
        "#!/bin/sh\n"
        f"printf '%s\\n' \"$@\" >>{record}\n"
        '[ "$1" = --python ] || exit 64\n'
        "shift\n"
        f'exec {sys.executable} "$@"\n'
    )
    launcher.chmod(0o755)
    return launcher, record


async def test_the_spawner_is_started_with_the_python_prefix(shim_root: Path, tmp_path: Path) -> None:
    launcher, record = _launcher(tmp_path)
    env = {"CLRK_PYTHON": f"{launcher} --python"}
    async with shim_process(shim_root, "--sandbox", "plain", "--", agent("echo.sh"), env=env) as shim:
        port = await shim_port(shim)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            answer = await client.post("/", json={"through": "the launcher"})
        shim.terminate()
        assert await shim.wait() == 0
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == {"through": "the launcher"}
    *argv, fd = record.read_text().splitlines()
    assert argv == ["--python", "-I", "-S", str(Path(spawn_server.__file__))]
    assert fd.isdigit()


async def test_a_python_prefix_that_cannot_start_stops_the_shim(shim_root: Path) -> None:
    """A wrong CLRK_PYTHON is a start-up failure, named, not a shim that answers 502 forever."""
    env = {"CLRK_PYTHON": "/nonexistent/python3"}
    async with shim_process(shim_root, "--sandbox", "plain", "--", agent("echo.sh"), env=env) as shim:
        assert shim.stderr is not None
        async with asyncio.timeout(30):
            log = (await shim.stderr.read()).decode()
            assert await shim.wait() != 0
    assert "/nonexistent/python3" in log
    assert list(shim_root.iterdir()) == []
