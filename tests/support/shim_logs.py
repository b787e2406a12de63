"""The real ``clrk-shim``'s start-up log, for tests that parse what it writes (its sandbox report).

A shim is started with the environment given, read until it serves, stopped with SIGTERM; what it
wrote on stderr (its logging) is returned whole.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from tests.support.runtime import agent, shim_process

__all__ = ["shim_start_log"]


async def shim_start_log(env: dict[str, str] | None = None, sandbox: str = "plain") -> str:
    """The stderr of a real ``clrk-shim`` (``--sandbox sandbox``, ``env`` added to its
    environment) from its start until it stopped, once it served."""
    root = Path(tempfile.mkdtemp(prefix="clrk-test-"))
    root.chmod(0o711)  # the sandbox uid traverses it
    try:
        async with shim_process(root, "--sandbox", sandbox, "--", agent("echo.sh"), env=env) as shim:
            assert shim.stderr is not None
            lines: list[str] = []
            async with asyncio.timeout(60):
                while line := (await shim.stderr.readline()).decode():
                    lines.append(line)
                    if "running on http" in line:
                        break
                shim.terminate()
                lines.append((await shim.stderr.read()).decode())
                assert await shim.wait() == 0, "".join(lines)
        return "".join(lines)
    finally:
        shutil.rmtree(root, ignore_errors=True)
