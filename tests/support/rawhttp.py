"""Raw-socket helpers for tests that send what an HTTP client library would refuse to."""

from __future__ import annotations

import socket
import time

__all__ = ["READ_LIMIT", "read_until_closed"]

READ_LIMIT = 10.0
"""Seconds a test waits, at most, for a server to answer and close."""


def read_until_closed(sock: socket.socket, limit: float = READ_LIMIT) -> tuple[bytes, bool]:
    """Everything the server sends until it closes the connection (True) or ``limit`` passes."""
    received, deadline = b"", time.monotonic() + limit
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return received, False
        except ConnectionResetError:
            return received, True
        if not chunk:
            return received, True
        received += chunk
    return received, False
