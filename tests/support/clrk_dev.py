"""Start a real ``clrk dev`` process for a test and learn its port from its ready line."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["RunningDev", "clrk_dev"]


@dataclass
class RunningDev:
    url: str
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)
    """Everything it printed so far (stdout and stderr)."""

    def log_text(self) -> str:
        return "".join(self.output)


@contextmanager
def clrk_dev(args: Sequence[str], env: Mapping[str, str]) -> Iterator[RunningDev]:
    """``python -m clrk dev --port 0 --no-tui ARGS``, stopped with SIGTERM afterwards."""
    command = [sys.executable, "-m", "clrk", "dev", "--port", "0", "--no-tui", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(env))
    assert process.stdout is not None
    output: list[str] = []
    port = None
    for line in process.stdout:
        output.append(line)
        if line.startswith('{"event": "ready"'):
            port = json.loads(line)["port"]
            break
    reader = threading.Thread(target=lambda: output.extend(process.stdout or []), daemon=True)
    reader.start()
    try:
        assert port, "clrk dev did not start:\n" + "".join(output)
        yield RunningDev(f"http://127.0.0.1:{port}", process, output)
    finally:
        process.terminate()
        try:
            process.wait(30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        reader.join(5)
        process.stdout.close()
