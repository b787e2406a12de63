"""One cluster ingress replica's async side as a process of its own, for tests that kill one.

``python -m tests.support.async_ingress --redis-url … --broker-url … --shim-port … --key-file …``
composes what ``clrk ingress`` composes for async invocations
(:func:`clrk.cluster.async_runs.cluster_runs`, the worker's routes, :func:`clrk.ingress.create_app`)
with a routing table of one agent whose Knative Service is a local shim (the one seam: ``clrk
ingress`` reads its table from the API server and reaches agents by their cluster DNS names), in
open mode, and serves it on 127.0.0.1 and a free port, which it prints (``listening on PORT``).
``--sign``: sign each forwarded request with the key file's key, as ``clrk ingress`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import uvicorn

from clrk.cluster.async_runs import cluster_runs
from clrk.ingress import AgentTarget, CallerKeys, HttpForwarder, IngressSettings, create_app

__all__ = ["LocalForwarder", "main"]


class LocalForwarder(HttpForwarder):
    """The cluster's forwarder, with every agent's Knative Service at one local shim."""

    def __init__(self, agent: str, port: int, timeout: float = 60.0, platform_key: bytes | None = None) -> None:
        super().__init__({agent: AgentTarget(agent, timeout)}, "cluster.local", platform_key)
        self._port = port

    def url(self, target: AgentTarget) -> str:
        return f"http://127.0.0.1:{self._port}/"


async def serve(args: argparse.Namespace) -> None:
    settings = IngressSettings(
        host="127.0.0.1",
        port=0,
        auth="open",
        broker_url=args.broker_url,
        redis_url=args.redis_url,
        run_lease_seconds=args.lease,
    )
    key = Path(args.key_file).read_bytes().strip()
    forwarder = LocalForwarder(args.agent, args.shim_port, platform_key=key if args.sign else None)
    parts = await cluster_runs(settings, forwarder, key)
    assert parts is not None
    app = create_app(
        forwarder, CallerKeys(open_mode=True), settings, extra_routes=parts.worker.routes(), runs=parts.runs
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    print(f"listening on {server.servers[0].sockets[0].getsockname()[1]}", flush=True)
    parts.start()
    try:
        await task
    finally:
        await parts.aclose()
        await forwarder.aclose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="async_ingress")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--broker-url", required=True)
    parser.add_argument("--shim-port", type=int, required=True)
    parser.add_argument("--key-file", required=True)
    parser.add_argument("--agent", default="team/bot")
    parser.add_argument("--lease", type=float, default=1.0)
    parser.add_argument("--sign", action="store_true", help="Sign what it forwards, as in a cluster.")
    asyncio.run(serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main(sys.argv[1:])
