#!/usr/bin/env python3
"""Benchmark the egress gateway: added latency per model call, and calls/s on one core.

Three processes: the fake Anthropic upstream, the gateway (pinned to one CPU), and this client
(raw h11 over asyncio, keep-alive). Each model call is timed direct to the fake and through the
gateway (CONNECT, then TLS to api.anthropic.com), for JSON and SSE: time to first body byte and
to the last. Then the same through the shim's identity relay in front of the gateway (a process
of its own, as in a shim with warm start: every byte of a warm-started sandbox's egress passes
it). Prints figures; not a test.

    .venv/bin/python hack/bench_egress.py [--calls 400] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h11

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(ROOT / "runtime"))

from tests.support.tlsca import TestCA  # noqa: E402

from clrk_runtime.protocol.keys import namespace_key  # noqa: E402
from clrk_runtime.protocol.tokens import ProxyClaims, sign  # noqa: E402

KEY = b"bench-key"
HOST = "api.anthropic.com"

FAKE = """
import asyncio, sys
sys.path[:0] = {paths!r}
from pathlib import Path
from tests.support.tlsca import Leaf
from tests.support.fake_anthropic import FakeAnthropic
async def main():
    fake = await FakeAnthropic(Leaf(Path({cert!r}), Path({key!r}))).start()
    fake.behaviour.chunk_delay = {pace!r}
    fake.behaviour.stamp_events = {pace!r} > 0
    fake.requests = type("Nope", (list,), {{"append": lambda self, x: None}})()
    print(fake.port, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

GATEWAY = """
import asyncio, logging, os, sys
sys.path[:0] = {paths!r}
os.sched_setaffinity(0, {{{cpu}}})
from pathlib import Path
from clrk.api.egress import AgentEgress, Budget, EgressConfig, Injection, SecretRef
from clrk.egress.gateway import EgressGateway
from clrk.egress.secrets import StaticSecrets
from clrk.egress.settings import EgressSettings
logging.basicConfig(level=logging.ERROR)
async def main():
    settings = EgressSettings(state_dir=Path({state!r}), egress_listen_port=0,
        egress_upstreams=["api.anthropic.com:443=127.0.0.1:{fake_port}"],
        egress_upstream_ca=Path({ca!r}))
    config = EgressConfig(
        agents={{"ns/bench": AgentEgress(allow=("api.anthropic.com",),
                 budget=Budget(tokens=10**12, window_seconds=3600))}},
        injections=(Injection(host="api.anthropic.com", header="x-api-key",
                    secret=SecretRef(name="a", key="k"), agents=("ns/bench",)),))
    gw = EgressGateway(settings, config, StaticSecrets({{("a", "k"): "sk-bench"}}), token_key={key!r})
    print(await gw.start(), flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


RELAY = """
import asyncio, sys
sys.path[:0] = {paths!r}
from clrk_runtime.sandbox.identities import IdentityRelay
async def main():
    relay = IdentityRelay("127.0.0.1:{gw_port}")
    await relay.start()
    user, password = relay.enrol(lambda: ("inv-bench", {token!r}))
    print(relay.port, user, password, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def spawn_relay(code: str) -> tuple[subprocess.Popen[str], int, str]:
    """The relay process, its port and the ``Proxy-Authorization`` of its one enrolled sandbox."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port, user, password = proc.stdout.readline().split()
    return proc, int(port), "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def spawn(code: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.h11 = reader, writer, h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int, ctx: ssl.SSLContext, proxy_auth: str | None) -> Conn:
        if proxy_auth is None:
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=HOST)
            return cls(r, w)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(
            f"CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\nProxy-Authorization: {proxy_auth}\r\n\r\n".encode()
        )
        head = await r.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        await w.start_tls(ctx, server_hostname=HOST)
        return cls(r, w)

    async def call(self, body: bytes, stamps: list[float] | None = None) -> tuple[float, float]:
        """One POST; returns (seconds to first body byte, seconds to the end).

        With ``stamps``, appends for each ``: t=`` stamped SSE event its forwarding delay (ms)."""
        headers = [
            ("host", HOST), ("content-type", "application/json"),
            ("content-length", str(len(body))), ("x-api-key", "placeholder"),
        ]  # fmt: skip
        started = time.perf_counter()
        out = self.h11.send(h11.Request(method="POST", target="/v1/messages?beta=true", headers=headers))
        out += self.h11.send(h11.Data(data=body)) + self.h11.send(h11.EndOfMessage())
        self.writer.write(out)
        first = 0.0
        status = 0
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.reader.read(65536))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                now = time.perf_counter()
                first = first or now - started
                if stamps is not None:
                    for line in bytes(event.data).split(b"\n"):
                        if line.startswith(b": t="):
                            stamps.append((now - float(line[4:])) * 1000)
            elif isinstance(event, h11.EndOfMessage):
                break
        assert status == 200, status
        self.h11.start_next_cycle()
        return first, time.perf_counter() - started

    def close(self) -> None:
        self.writer.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (robust to other load on a shared machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[int(p) - 1] if len(values) > 2 else values[0]


async def latency(
    port: int, ctx: ssl.SSLContext, auth: str | None, body: bytes, n: int
) -> tuple[list[float], list[float]]:
    conn = await Conn.open(port, ctx, auth)
    firsts, lasts = [], []
    for i in range(n + 20):
        f, last = await conn.call(body)
        if i >= 20:  # warm-up
            firsts.append(f * 1000)
            lasts.append(last * 1000)
    conn.close()
    return firsts, lasts


async def throughput(port: int, ctx: ssl.SSLContext, auth: str | None, body: bytes, n: int, conc: int) -> float:
    conns = [await Conn.open(port, ctx, auth) for _ in range(conc)]
    for c in conns:
        await c.call(body)
    per = n // conc
    started = time.perf_counter()

    async def run(c: Conn) -> None:
        for _ in range(per):
            await c.call(body)

    await asyncio.gather(*(run(c) for c in conns))
    elapsed = time.perf_counter() - started
    for c in conns:
        c.close()
    return per * conc / elapsed


async def forwarding(
    port: int, ctx: ssl.SSLContext, auth: str | None, body: bytes, n: int
) -> tuple[list[float], list[float]]:
    """Per-event delay from the upstream's write to the client's read: (first events, later)."""
    conn = await Conn.open(port, ctx, auth)
    firsts: list[float] = []
    later: list[float] = []
    for i in range(n + 5):
        stamps: list[float] = []
        await conn.call(body, stamps)
        if i >= 5 and stamps:
            firsts.append(stamps[0])
            later.extend(stamps[1:])
    conn.close()
    return firsts, later


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--cpu", type=int, default=0, help="CPU the gateway is pinned to")
    args = ap.parse_args()
    paths = [str(ROOT), str(ROOT / "platform"), str(ROOT / "runtime")]
    with tempfile.TemporaryDirectory() as tmp:
        ca = TestCA.create(Path(tmp) / "ca")
        leaf = ca.issue([HOST])
        fake, fake_port = spawn(FAKE.format(paths=paths, cert=str(leaf.cert_path), key=str(leaf.key_path), pace=0.0))
        paced, paced_port = spawn(
            FAKE.format(paths=paths, cert=str(leaf.cert_path), key=str(leaf.key_path), pace=0.003)
        )
        gw, gw_port = spawn(
            GATEWAY.format(paths=paths, cpu=args.cpu, state=str(Path(tmp) / "state"),
                           fake_port=fake_port, ca=str(ca.cert_path), key=KEY)
        )  # fmt: skip
        gw2, gw2_port = spawn(
            GATEWAY.format(paths=paths, cpu=args.cpu, state=str(Path(tmp) / "state"),
                           fake_port=paced_port, ca=str(ca.cert_path), key=KEY)
        )  # fmt: skip
        try:
            bundle = Path(tmp) / "state" / "egress" / "ca-bundle.pem"
            direct_ctx = ssl.create_default_context(cafile=str(ca.cert_path))
            proxy_ctx = ssl.create_default_context(cafile=str(bundle))
            # The shims of namespace "ns" sign with that namespace's key, derived from the platform's.
            shim_key = namespace_key(KEY, "proxy-token", "ns")
            token = sign(ProxyClaims("inv-bench", "ns/bench", time.time() + 3600), shim_key)
            auth = "Basic " + base64.b64encode(f"inv-bench:{token}".encode()).decode()
            relay, relay_port, relay_auth = spawn_relay(RELAY.format(paths=paths, gw_port=gw_port, token=token))
            relay2, relay2_port, relay2_auth = spawn_relay(RELAY.format(paths=paths, gw_port=gw2_port, token=token))
            print(f"egress bench: {args.calls} sequential calls per case after 20 warm-up; "
                  f"gateway pinned to CPU {args.cpu}; {os.cpu_count()} CPUs")  # fmt: skip
            for kind, stream in (("JSON", False), ("SSE", True)):
                body = json.dumps({"model": "claude-bench", "max_tokens": 64, "stream": stream,
                                   "messages": [{"role": "user", "content": "x" * 2000}]}).encode()  # fmt: skip
                d_first, d_last = await latency(fake_port, direct_ctx, None, body, args.calls)
                p_first, p_last = await latency(gw_port, proxy_ctx, auth, body, args.calls)
                for label, d, p in (("first byte", d_first, p_first), ("last byte", d_last, p_last)):
                    print(
                        f"  {kind:4} {label:10}: direct p50 {pct(d, 50):6.2f} ms p95 {pct(d, 95):6.2f}"
                        f" | via gateway p50 {pct(p, 50):6.2f} ms p95 {pct(p, 95):6.2f}"
                        f" | added p50 {pct(p, 50) - pct(d, 50):+6.2f} ms"
                        f" p95 {pct(p, 95) - pct(d, 95):+6.2f} ms"
                    )
                r_first, r_last = await latency(relay_port, proxy_ctx, relay_auth, body, args.calls)
                for label, p, r in (("first byte", p_first, r_first), ("last byte", p_last, r_last)):
                    print(
                        f"  {kind:4} {label:10}: via identity relay + gateway p50 {pct(r, 50):6.2f} ms"
                        f" p95 {pct(r, 95):6.2f} | the relay adds p50 {pct(r, 50) - pct(p, 50):+6.2f} ms"
                        f" p95 {pct(r, 95) - pct(p, 95):+6.2f} ms"
                    )
            for kind, stream in (("JSON", False), ("SSE", True)):
                body = json.dumps({"model": "claude-bench", "max_tokens": 64, "stream": stream,
                                   "messages": [{"role": "user", "content": "x" * 2000}]}).encode()  # fmt: skip
                direct = await throughput(fake_port, direct_ctx, None, body, args.calls * 2, args.concurrency)
                cpu = cpu_seconds(gw.pid)
                via = await throughput(gw_port, proxy_ctx, auth, body, args.calls * 2, args.concurrency)
                cpu = cpu_seconds(gw.pid) - cpu
                calls = (args.calls * 2 // args.concurrency + 1) * args.concurrency
                print(f"  {kind:4} throughput ({args.concurrency} conns): direct {direct:7.0f} calls/s"
                      f" | via gateway (1 core) {via:7.0f} calls/s"
                      f" | gateway CPU {cpu / calls * 1000:.2f} ms/call"
                      f" = {calls / cpu:.0f} calls per CPU-second")  # fmt: skip
            body = json.dumps({"model": "claude-bench", "max_tokens": 64, "stream": True,
                               "messages": [{"role": "user", "content": "x"}]}).encode()  # fmt: skip
            d_first, d_later = await forwarding(paced_port, direct_ctx, None, body, 100)
            p_first, p_later = await forwarding(gw2_port, proxy_ctx, auth, body, 100)
            for label, d, p in (("first event", d_first, p_first), ("later events", d_later, p_later)):
                print(
                    f"  SSE forwarding, {label:12} (upstream write -> client read, events 3 ms apart):"
                    f" direct p50 {pct(d, 50):5.2f} ms | via gateway p50 {pct(p, 50):5.2f} ms"
                    f" p95 {pct(p, 95):5.2f} | added p50 {pct(p, 50) - pct(d, 50):+5.2f} ms"
                    f" p95 {pct(p, 95) - pct(d, 95):+5.2f} ms"
                )
            r_first, r_later = await forwarding(relay2_port, proxy_ctx, relay2_auth, body, 100)
            for label, p, r in (("first event", p_first, r_first), ("later events", p_later, r_later)):
                print(
                    f"  SSE forwarding, {label:12}: via identity relay + gateway p50 {pct(r, 50):5.2f} ms"
                    f" p95 {pct(r, 95):5.2f} | the relay adds p50 {pct(r, 50) - pct(p, 50):+5.2f} ms"
                    f" p95 {pct(r, 95) - pct(p, 95):+5.2f} ms"
                )
        finally:
            for proc in (relay, relay2, gw, gw2, fake, paced):
                proc.terminate()
                proc.wait(5)


if __name__ == "__main__":
    asyncio.run(main())
