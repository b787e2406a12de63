"""The fake Anthropic API (:mod:`tests.support.fake_anthropic`) as a process of its own, for the
container tier, which runs it in a pod of its own on the podman network::

    python3 -m tests.support.serve_fake_anthropic --cert leaf.crt --key leaf.key --port 8443 \\
        --structured-output '{"filter": "."}'

It prints ``listening`` once it accepts connections, then one JSON line per request it receives:
method, path, model, and the SHA-256 of its ``x-api-key`` header (so a test can tell the real key
was injected without the key itself reaching any log).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from tests.support.fake_anthropic import FakeAnthropic, RecordedRequest
from tests.support.tlsca import Leaf


class _Printed(list[RecordedRequest]):
    """The fake's request log, echoed to stdout as it grows."""

    def append(self, request: RecordedRequest) -> None:
        super().append(request)
        body: Any = request.json() if request.body.startswith(b"{") else {}
        key = request.headers.get("x-api-key", "")
        line = {
            "method": request.method,
            "path": request.path,
            "model": body.get("model"),
            "x-api-key-sha256": hashlib.sha256(key.encode()).hexdigest() if key else None,
        }
        print(json.dumps(line), flush=True)


async def serve(args: argparse.Namespace) -> None:
    fake = FakeAnthropic(Leaf(Path(args.cert), Path(args.key)), host=args.host, port=args.port)
    fake.requests = _Printed()
    fake.behaviour.structured_output = json.loads(args.structured_output)
    async with fake:
        print("listening", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="serve_fake_anthropic")
    parser.add_argument("--cert", required=True, help="PEM: the leaf for api.anthropic.com, then its CA")
    parser.add_argument("--key", required=True)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--structured-output", default='{"ok": true}', help="JSON the StructuredOutput tool gets")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
