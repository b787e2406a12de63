"""Load and soak against a real `clrk dev` (a script that prints figures; not part of `make test`).

    .venv/bin/python hack/load.py load  [--callers 500] [--seconds 60]
    .venv/bin/python hack/load.py soak  [--rate 50] [--seconds 600]
    .venv/bin/python hack/load.py wrk   [--callers 500] [--seconds 60]

It starts `clrk dev` serving one agent (`cat`, maxConcurrency 16) on a free loopback port, then:
- load: N callers send requests back to back for S seconds. Every answer must be 200, or 503
  with Retry-After (capacity and queue are bounded on purpose); anything else is an error.
- wrk: the load test's traffic from wrk (Debian's package), which unlike this script's Python
  client can keep 500 connections busy on 2 cores: 200s/s, 503s (with Retry-After), latency.
- soak: a steady R requests/s for S seconds, sampling clrk dev's RSS and open files every 10 s;
  memory and descriptors should stay flat.
Traffic goes only to 127.0.0.1, bounded in count and time; `clrk dev` is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
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


def start_dev(root: Path, log: Path) -> tuple[subprocess.Popen[str], str]:
    (root / "m").mkdir()
    (root / "m" / "echo.yaml").write_text(AGENT)
    command = [sys.executable, "-m", "clrk", "dev", "--apply", str(root / "m"), "--port", "0", "--no-tui",
               "--state-dir", str(root / "state")]  # fmt: skip
    with log.open("w") as stderr:  # clrk dev's log: where an unexpected status is explained
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
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


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["X-Clrk-TaskAgent"] = "default/echo"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"caller": "wrk"}'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok, busy, retry, other = 0, 0, 0, 0 end
function response(status, headers, body)
  if status == 200 then ok = ok + 1
  elseif status == 503 then
    busy = busy + 1
    if headers["Retry-After"] or headers["retry-after"] then retry = retry + 1 end
  else other = other + 1 end
end
function done(summary, latency, requests)
  local o, b, r, x = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    o, b, r, x = o + t:get("ok"), b + t:get("busy"), r + t:get("retry"), x + t:get("other")
  end
  io.write(string.format("STATUSES %d %d %d %d\\n", o, b, r, x))
end
"""


def wrk(url: str, pid: int, callers: int, seconds: float) -> None:
    """The same load from wrk (C, one thread): the server, not the load generator, is measured."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT)
        script.flush()
        before = rss_kib(pid)
        # wrk's own timeout is the agent's (30 s): a queued invocation may wait seconds, rightly.
        command = [
            "wrk",
            "-t1",
            f"-c{callers}",
            f"-d{seconds:g}s",
            "--timeout",
            "30s",
            "--latency",
            "-s",
            script.name,
            url,
        ]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    ok, busy, retry, other = (int(x) for x in out.split("STATUSES ", 1)[1].split()[:4])
    latency = {m[0]: m[1] for m in re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.MULTILINE)}
    total = ok + busy + other
    print(f"wrk: {callers} connections for {seconds:g} s against maxConcurrency 16")
    found = re.search(r"Socket errors:.*", out)
    errors = found.group(0) if found else "no socket errors"
    print(f"  answers: {total} ({total / seconds:.0f}/s): {ok} x 200 ({ok / seconds:.0f}/s), {busy} x 503 "
          f"({retry} with Retry-After), {other} other; wrk: {errors}")  # fmt: skip
    print(f"  latency of all answers: p50 {latency.get('50', '?')}, p99 {latency.get('99', '?')}")
    print(f"  clrk dev RSS: {before / 1024:.0f} MiB before, {rss_kib(pid) / 1024:.0f} MiB after; "
          f"open files after: {open_files(pid)}")  # fmt: skip


async def soak(url: str, pid: int, rate: float, seconds: float) -> None:
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    samples: list[tuple[float, int, int]] = []  # (t s, RSS KiB, open fds), every 10 s

    def sample(elapsed: float) -> None:
        samples.append((elapsed, rss_kib(pid), open_files(pid)))
        t, rss, fds = samples[-1]
        print(f"  t={t:5.0f}s RSS {rss / 1024:.1f} MiB, open files {fds}, answers so far {sum(statuses.values())}",
              flush=True)  # fmt: skip

    start = time.monotonic()
    async with httpx.AsyncClient(timeout=30) as client:
        pending: set[asyncio.Task[None]] = set()

        async def one() -> None:
            started = time.monotonic()
            try:
                response = await client.post(url, headers=HEADERS, content=b"{}")
            except httpx.HTTPError as exc:  # counted, never fatal: the soak reports what happened
                statuses[type(exc).__name__] += 1
                return
            statuses[str(response.status_code)] += 1
            if response.status_code == 200:
                latencies.append(time.monotonic() - started)

        sent = 0
        while (elapsed := time.monotonic() - start) < seconds:
            if not samples or elapsed - samples[-1][0] >= 10:
                sample(elapsed)
            while sent < elapsed * rate:
                task = asyncio.create_task(one())
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
            await asyncio.sleep(0.005)
        await asyncio.gather(*pending)
    sample(time.monotonic() - start)  # just after the last answer: the last sandboxes may still be closing
    await asyncio.sleep(5)
    idle_rss, idle_fds = rss_kib(pid), open_files(pid)  # at rest again, to compare with t=0

    def mean(chosen: list[tuple[float, int, int]]) -> tuple[float, float]:
        return statistics.fmean(s[1] for s in chosen) / 1024, statistics.fmean(s[2] for s in chosen)

    first_minute = [s for s in samples if 0 < s[0] <= 60] or samples[:1]  # traffic's first minute, not t=0
    last_minute = [s for s in samples if s[0] >= samples[-1][0] - 60] or samples[-1:]
    rss_first, fds_first = mean(first_minute)
    rss_last, fds_last = mean(last_minute)
    errors = sum(v for k, v in statuses.items() if k != "200")
    print(f"soak: {rate:g}/s for {seconds:g} s: {sent} sent ({sent / seconds:.1f}/s); "
          f"answers {dict(sorted(statuses.items()))}; not 200: {errors}")  # fmt: skip
    if latencies:
        ms = [x * 1000 for x in latencies]
        print(f"  200s: p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms, max {max(ms):.1f} ms")
    print("  timeline, every 10 s (RSS MiB): " + " ".join(f"{s[1] / 1024:.1f}" for s in samples))
    print("  timeline, every 10 s (open files): " + " ".join(str(s[2]) for s in samples))
    rss = [s[1] / 1024 for s in samples]
    print(
        f"  RSS {rss[0]:.1f} MiB at t=0 (idle) → {rss[-1]:.1f} MiB at the end; min {min(rss):.1f}, max {max(rss):.1f}"
    )
    print(f"  first minute mean: RSS {rss_first:.1f} MiB, open files {fds_first:.1f} ({len(first_minute)} samples)")
    print(f"  last minute mean:  RSS {rss_last:.1f} MiB, open files {fds_last:.1f} ({len(last_minute)} samples)")
    print(f"  open files {samples[0][2]} at t=0 → {samples[-1][2]} at the end; max {max(s[2] for s in samples)}")
    print(f"  at rest, 5 s after the last answer: RSS {idle_rss / 1024:.1f} MiB, open files {idle_fds} "
          f"(t=0: {samples[0][1] / 1024:.1f} MiB, {samples[0][2]})")  # fmt: skip
    later = [s for s in samples if s[0] >= 60]
    if len(later) > 1 and later[-1][0] > later[0][0]:
        grown_kib, span_s = later[-1][1] - later[0][1], later[-1][0] - later[0][0]
        print(f"  RSS after the first minute: {later[0][1] / 1024:.1f} → {later[-1][1] / 1024:.1f} MiB "
              f"({grown_kib / 1024 / (span_s / 60):+.2f} MiB/min, {grown_kib * 1024 / (rate * span_s):+.0f} bytes "
              "per request)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["load", "soak", "wrk"])
    parser.add_argument("--callers", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--log", type=Path, default=Path("clrk-load-dev.log"), help="where clrk dev's log goes")
    args = parser.parse_args()
    print(f"clrk dev's log: {args.log}")
    with tempfile.TemporaryDirectory() as root:
        process, url = start_dev(Path(root), args.log)
        try:
            if args.mode == "load":
                asyncio.run(load(url, process.pid, args.callers, args.seconds or 60))
            elif args.mode == "wrk":
                wrk(url, process.pid, args.callers, args.seconds or 60)
            else:
                asyncio.run(soak(url, process.pid, args.rate, args.seconds or 600))
        finally:
            process.terminate()
            process.wait(60)


if __name__ == "__main__":
    main()
