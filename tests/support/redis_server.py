"""A real ``redis-server`` for tests: its own process, on a Unix socket in a fresh directory.

A Unix socket, not a TCP port: redis-server cannot pick a free port itself (``--port 0`` turns
TCP off), and a socket in a directory of the test's own cannot collide with anything else
running. The server is ready once it logs so (read from its stdout: no polling), keeps nothing on
disk, and is gone when the context ends.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["have_redis_server", "redis_server"]

_READY = "ready to accept connections"
"""What it logs once it listens (on a Unix socket: "The server is now ready to accept connections at …")."""


def have_redis_server() -> bool:
    return shutil.which("redis-server") is not None


@contextmanager
def redis_server() -> Iterator[str]:
    """A running server's URL (``unix://…``), for redis-py's ``from_url``."""
    with tempfile.TemporaryDirectory(prefix="clrk-redis-") as directory:
        sock = Path(directory) / "redis.sock"
        proc = subprocess.Popen(
            [
                "redis-server", "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
                "--save", "", "--appendonly", "no", "--dir", directory,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        # Keeps reading what it logs once it is ready, so that a full pipe never stalls it.
        drain = threading.Thread(target=proc.stdout.read, daemon=True)
        try:
            log = []
            for line in proc.stdout:
                log.append(line)
                if _READY in line.lower():
                    break
            else:
                raise RuntimeError("redis-server did not start:\n" + "".join(log))
            drain.start()
            yield f"unix://{sock}"
        finally:
            proc.terminate()
            proc.wait(10)
            if drain.is_alive():
                drain.join(10)
            proc.stdout.close()
