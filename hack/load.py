"""Load and soak against a real `clrk dev` (a script that prints figures; not part of `make test`).

    .venv/bin/python hack/load.py load  [--callers 500] [--seconds 60]
    .venv/bin/python hack/load.py soak  [--rate 50] [--seconds 600]

It starts `clrk dev` serving one agent (`cat`, maxConcurrency 16) on a free loopback port, then:
- load: N callers send requests back to back for S seconds. Every answer must be 200, or 503
  with Retry-After (capacity and queue are bounded on purpose); anything else is an error.
- soak: a steady R requests/s for S seconds, sampling clrk dev's RSS and open files every 10 s;
  memory and descriptors should stay flat.
Traffic goes only to 127.0.0.1, bounded in count and time; `clrk dev` is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

AGENT = """\
apiVersion: clrk.dev/v1alpha1
kind: TaskAgent
metadata: {name: echo}
spec:
  template:
    spec:
      image: registry.example.com/echo:1
      command: [cat]
  timeout: 30s
  maxConcurrency: 16
"""
HEADERS = {"X-Clrk-TaskAgent": "default/echo", "content-type": "application/json"}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def start_dev(root: Path) -> tuple[subprocess.Popen[str], str]:
    (root / "m").mkdir()
    (root / "m" / "echo.yaml").write_text(AGENT)
    command = [sys.executable, "-m", "clrk", "dev", "--apply", str(root / "m"), "--port", "0", "--no-tui",
               "--state-dir", str(root / "state")]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith('{"event": "ready"'):
            return process, f"http://127.0.0.1:{json.loads(line)['port']}/"
    raise SystemExit("clrk dev did not start")


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else (values or [0.0])[0]


async def load(url: str, pid: int, callers: int, seconds: float) -> None:
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    missing_retry_after = 0
    end = time.monotonic() + seconds
    peak_rss = rss_kib(pid)
    limits = httpx.Limits(max_connections=callers, max_keepalive_connections=callers)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def caller(i: int) -> None:
            nonlocal missing_retry_after
            n = 0
            while time.monotonic() < end:
                started = time.monotonic()
                try:
                    response = await client.post(url, headers=HEADERS, content=b'{"caller": %d, "n": %d}' % (i, n))
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
                    continue
                n += 1
                statuses[str(response.status_code)] += 1
                if response.status_code == 200:
                    latencies.append(time.monotonic() - started)
                elif response.status_code == 503 and "retry-after" not in response.headers:
                    missing_retry_after += 1

        async def sample() -> None:
            nonlocal peak_rss
            while time.monotonic() < end:
                peak_rss = max(peak_rss, rss_kib(pid))
                await asyncio.sleep(1)

        before = rss_kib(pid)
        await asyncio.gather(sample(), *(caller(i) for i in range(callers)))
    errors = sum(v for k, v in statuses.items() if k not in ("200", "503"))
    print(f"load: {callers} callers for {seconds:g} s against maxConcurrency 16")
    print(
        f"  answers: {dict(statuses)}; errors (not 200/503): {errors}; 503 without Retry-After: {missing_retry_after}"
    )
    if latencies:
        ms = [x * 1000 for x in latencies]
        p50, p99 = percentile(ms, 50), percentile(ms, 99)
        print(f"  200s: {len(ms)} ({len(ms) / seconds:.0f}/s), p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(f"  clrk dev RSS: {before / 1024:.0f} MiB before, {peak_rss / 1024:.0f} MiB peak, "
          f"{rss_kib(pid) / 1024:.0f} MiB after; open files after: {open_files(pid)}")  # fmt: skip


async def soak(url: str, pid: int, rate: float, seconds: float) -> None:
    statuses: Counter[int] = Counter()
    samples: list[tuple[float, int, int]] = []
    start = time.monotonic()
    async with httpx.AsyncClient(timeout=30) as client:
        pending: set[asyncio.Task[None]] = set()

        async def one() -> None:
            response = await client.post(url, headers=HEADERS, content=b"{}")
            statuses[response.status_code] += 1

        sent = 0
        while (elapsed := time.monotonic() - start) < seconds:
            if not samples or elapsed - samples[-1][0] >= 10:
                samples.append((elapsed, rss_kib(pid), open_files(pid)))
                print(
                    f"  t={elapsed:5.0f}s RSS {samples[-1][1] / 1024:.1f} MiB, open files {samples[-1][2]}", flush=True
                )
            while sent < elapsed * rate:
                task = asyncio.create_task(one())
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
            await asyncio.sleep(0.005)
        await asyncio.gather(*pending)
    first, last = samples[1] if len(samples) > 1 else samples[0], samples[-1]
    print(f"soak: {rate:g}/s for {seconds:g} s: {dict(statuses)}")
    print(f"  RSS {first[1] / 1024:.1f} → {last[1] / 1024:.1f} MiB; open files {first[2]} → {last[2]} (t=10 s → end)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["load", "soak"])
    parser.add_argument("--callers", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        process, url = start_dev(Path(root))
        try:
            if args.mode == "load":
                asyncio.run(load(url, process.pid, args.callers, args.seconds or 60))
            else:
                asyncio.run(soak(url, process.pid, args.rate, args.seconds or 600))
        finally:
            process.terminate()
            process.wait(60)


if __name__ == "__main__":
    main()
