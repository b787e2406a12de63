"""The host half of the egress bridge: a Unix socket that relays to the egress proxy's TCP port.

bubblewrap sandboxes have no network but their own loopback; this socket, bind-mounted into
each of them, is their only way out (socat inside serves it on 127.0.0.1:3128). One relay
serves every sandbox of a shim: callers are told apart by their proxy credentials, not by
socket. socat does the relaying, as inside the sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

__all__ = ["EgressRelay"]

_START_TIMEOUT = 5.0
_POLL = 0.002


class EgressRelay:
    def __init__(self, socket_path: Path, egress: str) -> None:
        host, sep, port = egress.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"egress_proxy must be host:port, got {egress!r}")
        self.socket_path = socket_path
        self._target = f"TCP:{host.strip('[]')}:{port}"
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start socat and return once the socket accepts connections."""
        listen = f"UNIX-LISTEN:{self.socket_path},fork,mode=0666,unlink-early"
        self._process = await asyncio.create_subprocess_exec(
            "socat",
            listen,
            self._target,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        async with asyncio.timeout(_START_TIMEOUT):
            # socat binds and listens in one go, microseconds apart: the file's existence is
            # enough (a test connection would reach the egress gateway as a stray connection).
            while not self.socket_path.exists():
                if self._process.returncode is not None:
                    raise RuntimeError(f"socat exited with {self._process.returncode}")
                await asyncio.sleep(_POLL)

    async def stop(self) -> None:
        """Stop socat and its per-connection children, and remove the socket."""
        process = self._process
        if process is None:
            return
        self._process = None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                # Its own group: socat's forked per-connection children go too.
                os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        self.socket_path.unlink(missing_ok=True)
