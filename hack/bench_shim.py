#!/usr/bin/env python3
"""Benchmark the runtime shim: a trivial agent (``cat``) through clrk-shim's HTTP endpoint.

Prints p50, p99 and invocations/s at 1 and 16 concurrent callers, cold (warm pool 0) and warm,
for both sandbox kinds, next to two floors measured in the same run. Back to back, a warm
invocation competes with the background refill of the sandbox it took; the "paced" rows space
the calls 20 ms apart to show the warm path alone; the "wrk" rows send the same requests from wrk
(when installed), whose own CPU cost is a fraction of this script's client. Floors:

* ``floor``: the same agent spawned directly with asyncio subprocess (no HTTP, no sandbox);
* ``floor (bwrap + cat)``: bubblewrap with the shim's layout around the same agent, spawned the
  same way: what a fresh set of namespaces and mounts costs on this machine, shim or not;
* ``http``: uvicorn answering at once (no agent), to show what HTTP alone costs.

The shim runs as its own process (the real ``clrk-shim`` command on port 0); the callers are a
minimal keep-alive HTTP/1.1 client, so the client's own cost stays small. Not a test: it prints.

    .venv/bin/python hack/bench_shim.py [--seconds 2.5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from clrk_runtime.sandbox.layouts import bwrap_argv

BODY = json.dumps({"question": "what is the answer?", "context": "x" * 200}).encode()
REQUEST = (
    b"POST / HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)
HTTP_ONLY_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})
"""


_BACKGROUND: set[asyncio.Task[None]] = set()
_COUNT = [0]
"""Requests answered so far (warm-ups included), to share out the server's CPU time."""


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _drive(one: Callable[[], Awaitable[None]], callers: int, seconds: float, pause: float = 0.0) -> list[float]:
    """Run ``one`` from ``callers`` tasks for ``seconds`` (``pause`` s apart); return latencies."""
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def caller() -> None:
        while time.perf_counter() < stop:
            start = time.perf_counter()
            await one()
            latencies.append(time.perf_counter() - start)
            if pause:
                await asyncio.sleep(pause)

    await asyncio.gather(*(caller() for _ in range(callers)))
    return latencies


class _Connection:
    """One keep-alive HTTP/1.1 connection that POSTs the same request again and again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self) -> None:
        if self.streams is None:
            self.streams = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self.streams
        writer.write(REQUEST)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        await reader.readexactly(length)
        _COUNT[0] += 1
        if status != 200:
            raise RuntimeError(f"status {status}: {head!r}")

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()


async def _http_cell(port: int, callers: int, seconds: float, pause: float = 0.0) -> list[float]:
    connections = [_Connection(port) for _ in range(callers)]
    pool = asyncio.Queue[_Connection]()
    for connection in connections:
        pool.put_nowait(connection)

    async def one() -> None:
        connection = await pool.get()
        try:
            await connection.post()
        finally:
            pool.put_nowait(connection)

    await _drive(one, callers, 0.3)  # warm-up: connections, imports, first sandboxes
    try:
        return await _drive(one, callers, seconds, pause)
    finally:
        for connection in connections:
            connection.close()


async def _floor_cell(callers: int, seconds: float, argv: tuple[str, ...] = ("cat",)) -> list[float]:
    async def one() -> None:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        await process.communicate(BODY)

    await _drive(one, callers, 0.3)
    return await _drive(one, callers, seconds)


async def _start(argv: list[str], env: dict[str, str]) -> tuple[asyncio.subprocess.Process, int]:
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    async with asyncio.timeout(30):
        while line := (await process.stderr.readline()).decode():
            if match := re.search(r"running on http://[\d.]+:(\d+)", line):
                _BACKGROUND.add(asyncio.create_task(_discard(process.stderr)))
                return process, int(match.group(1))
    raise RuntimeError(f"{argv[0]} did not start")


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


async def _stop(process: asyncio.subprocess.Process) -> None:
    process.terminate()
    await process.wait()


def _row(name: str, callers: int, latencies: list[float], seconds: float | None) -> str:
    p50 = statistics.median(latencies) * 1000
    p99 = _percentile(latencies, 0.99) * 1000
    rate = f"{len(latencies) / seconds:>10.0f}" if seconds else f"{'-':>10}"
    return f"{name:<22} {callers:>3} {p50:>9.2f} {p99:>9.2f} {rate}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=2.5, help="measured time per cell")
    args = parser.parse_args()
    seconds = args.seconds
    shim = shutil.which("clrk-shim", path=str(Path(sys.executable).parent)) or "clrk-shim"
    env = {"PATH": os.environ.get("PATH", os.defpath)}
    print(f"cpus: {os.cpu_count()}, {seconds:g} s per cell, agent: cat, body {len(BODY)} B")
    print(f"{'what':<22} {'c':>3} {'p50 ms':>9} {'p99 ms':>9} {'inv/s':>10}")
    for callers in (1, 16):
        print(_row("floor (spawn)", callers, await _floor_cell(callers, seconds), seconds))
    if shutil.which("bwrap"):
        # bubblewrap's own cost: the shim's layout (no shim, no HTTP), cat inside, no warm pool.
        with tempfile.TemporaryDirectory() as meta:
            layout = bwrap_argv(
                stub="exec cat", meta_dir=meta, hide=[], binds=[], relay_socket=None, uid=65534, gid=65534,
                path="/usr/bin:/bin", root_entries=None,
            )  # fmt: skip
            for callers in (1, 16):
                latencies = await _floor_cell(callers, seconds, tuple(layout))
                print(_row("floor (bwrap + cat)", callers, latencies, seconds))
    http_argv = [sys.executable, "-c", HTTP_ONLY_APP + _SERVE_SNIPPET]
    server, port = await _start(http_argv, env)
    try:
        for callers in (1, 16):
            print(_row("http only", callers, await _http_cell(port, callers, seconds), seconds))
    finally:
        await _stop(server)
    for kind in ("plain", "bwrap"):
        for warm in (0, 16):
            argv = [shim, "--port", "0", "--host", "127.0.0.1", "--sandbox", kind]
            argv += ["--warm-pool", str(warm), "--max-concurrency", "16", "--", "cat"]
            label = f"{kind} {'warm' if warm else 'cold'}"
            used, count = _cpu_seconds(), _COUNT[0]
            server, port = await _start(argv, env)
            try:
                for callers in (1, 16):
                    latencies = await _http_cell(port, callers, seconds)
                    print(_row(label, callers, latencies, seconds))
                if warm:
                    # The warm path alone: 20 ms apart, the pool is refilled between calls.
                    latencies = await _http_cell(port, 1, seconds, pause=0.02)
                    print(_row(f"{label} (paced)", 1, latencies, None))
                if shutil.which("wrk"):
                    print(await _wrk_row(f"{label} (wrk)", port, 16, seconds))
            finally:
                shim_own, helpers = _tree_cpu(server.pid)
                await _stop(server)
            answered = max(1, _COUNT[0] - count)
            total = (_cpu_seconds() - used) / answered * 1000
            shim_ms, spawner_ms = shim_own / answered * 1000, helpers / answered * 1000
            print(
                f"{label + ': CPU per invocation':<32} {total:>6.2f} ms: shim {shim_ms:.2f},"
                f" spawner {spawner_ms:.2f}, sandboxes {total - shim_ms - spawner_ms:.2f}"
            )


WRK_SCRIPT = f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {json.dumps(BODY.decode())}
"""


async def _wrk_row(label: str, port: int, connections: int, seconds: float) -> str:
    """The same requests from wrk (C, one thread): a load generator that costs the shared CPUs
    little, as one would measure OpenFaaS's watchdog with. Its requests count in the CPU share."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT)
        script.flush()
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", script.name]
        process = await asyncio.create_subprocess_exec(
            *argv, f"http://127.0.0.1:{port}/", stdout=asyncio.subprocess.PIPE
        )
        out = (await process.communicate())[0].decode()
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    _COUNT[0] += int(rate * seconds)
    if re.search(r"Non-2xx", out):
        raise RuntimeError(f"wrk saw errors:\n{out}")
    p50, p99 = (_ms(re.search(rf"^\s+{q}%\s+(\S+)", out, re.MULTILINE).group(1)) for q in (50, 99))  # type: ignore[union-attr]
    return f"{label:<22} {connections:>3} {p50:>9.2f} {p99:>9.2f} {rate:>10.0f}"


def _ms(text: str) -> float:
    """wrk's ``1.23ms`` / ``456.00us`` / ``1.02s`` in milliseconds."""
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _tree_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of process ``pid`` itself, and of its live children themselves (the spawner)."""

    def own(process: int) -> float:
        fields = Path(f"/proc/{process}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    children = [c for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
    return own(pid), sum(own(int(child)) for child in children)


def _cpu_seconds() -> float:
    """CPU time of every process this one has reaped: a stopped shim with all it started."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


_SERVE_SNIPPET = """
import uvicorn
uvicorn.run(app, host="127.0.0.1", port=0, log_level="info", access_log=False)
"""

if __name__ == "__main__":
    asyncio.run(main())
