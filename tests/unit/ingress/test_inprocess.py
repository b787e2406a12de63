"""The in-process ASGI caller: the head and each chunk as the app sends them, the app told when its
caller leaves (and cancelled if it will not end), httpx's errors for a late or broken answer, and
no task of the app left behind. Plain ASGI apps, no sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from clrk.ingress.inprocess import asgi_call

START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}


def body(chunk: bytes, more: bool = True) -> dict[str, Any]:
    return {"type": "http.response.body", "body": chunk, "more_body": more}


class GatedApp:
    """Sends ``first``, waits for the test to open the gate, sends ``rest``; keeps what it saw."""

    def __init__(self, rest: list[bytes]) -> None:
        self.gate = asyncio.Event()
        self.rest = rest
        self.received: list[dict[str, Any]] = []
        self.finished = False
        self.cancelled = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            self.received.append(await receive())
            await send(START)
            await send(body(b"first\n"))
            await self.gate.wait()
            for chunk in self.rest:
                await send(body(chunk))
            await send(body(b"", more=False))
            self.received.append(await receive())
            self.finished = True
        except asyncio.CancelledError:
            self.cancelled = True
            raise


def no_app_task_left() -> bool:
    """Every app task ended (``all_tasks`` holds the pending ones)."""
    return not [task for task in asyncio.all_tasks() if task.get_name().startswith("asgi ")]


async def test_the_head_and_each_chunk_come_while_the_app_still_runs() -> None:
    app = GatedApp([b"second\n", b"third\n"])
    headers = [(b"X-Test", b"1")]
    async with asgi_call(app, "POST", "/", headers, b'{"q": 1}', wait=5) as answer:
        assert (answer.status, answer.headers) == (200, START["headers"])
        chunks = aiter(answer.chunks)
        assert await anext(chunks) == b"first\n"
        assert not app.finished, "the first chunk came before the app was let go on"
        app.gate.set()
        assert [chunk async for chunk in chunks] == [b"second\n", b"third\n"]
    assert app.received[0] == {"type": "http.request", "body": b'{"q": 1}', "more_body": False}
    assert app.received[1] == {"type": "http.disconnect"}, "after the answer, as from a server"
    assert app.finished and no_app_task_left()


async def test_the_app_sees_its_request_as_from_a_server() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope)
        await send(START)
        await send(body(b"", more=False))

    async with asgi_call(app, "POST", "/", [(b"X-Clrk-TaskAgent", b"a/b")], b"12345", wait=5):
        pass
    assert (seen["type"], seen["method"], seen["path"]) == ("http", "POST", "/")
    assert dict(seen["headers"]) == {b"host": b"shim", b"x-clrk-taskagent": b"a/b", b"content-length": b"5"}


async def test_a_caller_leaving_early_tells_the_app_and_leaves_no_task() -> None:
    disconnected = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(START)
        await send(body(b"first\n"))
        assert await receive() == {"type": "http.disconnect"}
        disconnected.set()
        await send(body(b"ignored once the caller left\n"))  # as a server does: no error

    async with asgi_call(app, "POST", "/", [], b"", wait=5) as answer:
        assert await anext(aiter(answer.chunks)) == b"first\n"
        assert not disconnected.is_set()
    assert disconnected.is_set() and no_app_task_left()


async def test_an_app_that_will_not_end_is_cancelled_after_the_grace() -> None:
    app = GatedApp([])  # the gate never opens: it ignores its caller leaving
    async with asgi_call(app, "POST", "/", [], b"", wait=5, grace=0.01) as answer:
        assert await anext(aiter(answer.chunks)) == b"first\n"
    assert app.cancelled and no_app_task_left()


async def test_an_app_blocked_on_a_full_queue_is_freed_when_its_caller_leaves() -> None:
    sent: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        for n in range(100):  # far more than the queue holds, nobody reading
            await send(body(b"x"))
            sent.append(n)
        assert (await receive())["type"] == "http.request"
        assert await receive() == {"type": "http.disconnect"}

    async with asgi_call(app, "POST", "/", [], b"", wait=5) as answer:
        assert await anext(aiter(answer.chunks)) == b"x"
        assert len(sent) < 100, "the app waits for its reader"
    assert sent == list(range(100)) and no_app_task_left()


async def test_no_head_within_wait_is_a_read_timeout() -> None:
    app = GatedApp([])

    async def late(scope: Any, receive: Any, send: Any) -> None:
        await app.gate.wait()

    with pytest.raises(httpx.ReadTimeout):
        async with asgi_call(late, "POST", "/", [], b"", wait=0.01, grace=0.01):
            pass
    assert no_app_task_left()


async def test_no_chunk_within_wait_is_a_read_timeout() -> None:
    app = GatedApp([])
    async with asgi_call(app, "POST", "/", [], b"", wait=0.05, grace=0.01) as answer:
        chunks = aiter(answer.chunks)
        assert await anext(chunks) == b"first\n"
        with pytest.raises(httpx.ReadTimeout):
            await anext(chunks)
    assert no_app_task_left()


async def test_an_app_that_raises_before_its_head_raises_to_its_caller() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise LookupError("a bug")

    with pytest.raises(LookupError, match="a bug"):
        async with asgi_call(app, "POST", "/", [], b"", wait=5):
            pass


@pytest.mark.parametrize("how", ["raises", "returns", "no head"])
async def test_an_answer_cut_short_is_a_remote_protocol_error(how: str, caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if how == "no head":
            return
        await send(START)
        await send(body(b"first\n"))
        if how == "raises":
            raise LookupError("a bug")

    async def read() -> None:
        async with asgi_call(app, "POST", "/", [], b"", wait=5) as answer:
            async for _ in answer.chunks:
                pass

    with pytest.raises(httpx.RemoteProtocolError):
        await read()
    assert ("a bug" in caplog.text) == (how == "raises"), "the app's own failure is logged"
    assert no_app_task_left()


async def test_a_caller_cancelled_while_it_waits_for_the_app_cancels_the_app() -> None:
    heard = asyncio.Event()
    cancelled: list[bool] = []

    async def stubborn(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(START)
        await send(body(b"first\n"))
        assert await receive() == {"type": "http.disconnect"}
        heard.set()
        try:
            await asyncio.Event().wait()  # it heard, and will not end
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def call() -> None:
        async with asgi_call(stubborn, "POST", "/", [], b"", wait=5, grace=60) as answer:
            await anext(aiter(answer.chunks))
            await asyncio.Event().wait()

    task = asyncio.create_task(call())
    await asyncio.wait_for(_until(lambda: not no_app_task_left()), 5)
    task.cancel()  # the caller leaves: it gives the app its grace
    await asyncio.wait_for(heard.wait(), 5)
    task.cancel()  # cancelled again while it waits: it cancels the app rather than leave it running
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled == [True] and no_app_task_left()


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.001)
