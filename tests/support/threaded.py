"""Run an async server (the fake Anthropic API, the OTLP receiver) on its own event loop in a
background thread, so that synchronous, module-scoped fixtures can hold it open."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager

__all__ = ["in_thread"]


@contextmanager
def in_thread[T](manager: AbstractAsyncContextManager[T]) -> Iterator[T]:
    """Enter ``manager`` on a new loop in a daemon thread; exit it (and the loop) afterwards."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-server", daemon=True)
    thread.start()
    try:
        value = asyncio.run_coroutine_threadsafe(manager.__aenter__(), loop).result(30)
        try:
            yield value
        finally:
            asyncio.run_coroutine_threadsafe(manager.__aexit__(None, None, None), loop).result(30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
