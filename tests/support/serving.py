"""A uvicorn server in the running event loop, on 127.0.0.1 and a free port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn

__all__ = ["uvicorn_serving"]


@asynccontextmanager
async def uvicorn_serving(config: uvicorn.Config) -> AsyncIterator[int]:
    """Serve ``config`` (port 0) until the block ends; yields the port it got."""
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task
