#!/usr/bin/python3
"""A fork bomb, counted: forks children that wait forever until a fork fails (or 400 of them
ran), tells the gateway ($HTTPS_PROXY's host:port) "forked N" and waits for its answer (the test
meanwhile checks that the server still serves others), then answers "forked: N"."""

import os
import signal
import socket
import sys

sys.stdin.read()
forked = 0
while forked < 400:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        signal.pause()
        os._exit(0)
    forked += 1
gateway = os.environ["HTTPS_PROXY"].rpartition("@")[2].removeprefix("http://")
host, _, port = gateway.rpartition(":")
with socket.create_connection((host, int(port)), timeout=60) as connection:
    connection.sendall(f"forked {forked}\n".encode())
    connection.recv(100)
print(f"forked: {forked}")
