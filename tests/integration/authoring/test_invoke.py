"""``clrk invoke`` against the real ingress, served by uvicorn on 127.0.0.1:0 in a thread, with
small ASGI apps as the agents' shims and ``clrk dev``'s real traces route beside it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from clrk.dev.running import traces_route
from clrk.ingress import AgentTarget, CallerKeys, IngressSettings, InProcessForwarder, create_app
from clrk.telemetry.spans import SpanStore
from tests.support.authoring_cli import clrk

INVOCATION = "x-clrk-invocation-id"
SEEN: list[dict[str, str]] = []
"""Headers of each request the ingress received, in order."""


class Recording:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            SEEN.append({k.decode().lower(): v.decode() for k, v in scope["headers"]})
        await self.app(scope, receive, send)


def _shim(answer: Any) -> Starlette:
    async def handle(request: Request) -> Response:
        return await answer(request)

    return Starlette(routes=[Route("/", handle, methods=["POST"])])


async def _echo(request: Request) -> Response:
    """What the shim received: the envelope (the caller's body is its data) and the headers."""
    body = await request.body()
    return JSONResponse({"received": body.decode(), "headers": dict(request.headers)})


async def _broken(request: Request) -> Response:
    invocation = request.headers[INVOCATION]
    error = {"type": "agent_failed", "message": "the agent exited with code 3", "invocationId": invocation}
    return JSONResponse({"error": error}, status_code=502)


async def _picky(request: Request) -> Response:
    return JSONResponse({"why": "prompt too long"}, status_code=422)


def _costly(store: SpanStore) -> Any:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(store))
    tracer = provider.get_tracer("test")

    async def answer(request: Request) -> Response:
        invocation = request.headers[INVOCATION]
        with tracer.start_as_current_span("invocation", attributes={"clrk.invocation.id": invocation}):
            for tokens in ((100, 20), (50, 5)):
                attributes = {"gen_ai.usage.input_tokens": tokens[0], "gen_ai.usage.output_tokens": tokens[1]}
                with tracer.start_as_current_span("chat claude-haiku-4-5", attributes=attributes):
                    pass
        return JSONResponse({"answer": "Paris."})

    return answer


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    store = SpanStore()
    forwarder = InProcessForwarder()
    agents = {"default/echo": _echo, "team/echo": _echo, "default/broken": _broken, "default/picky": _picky}
    agents["default/costly"] = _costly(store)
    forwarder.set_apps({ref: (AgentTarget(ref, 10.0), _shim(answer)) for ref, answer in agents.items()})
    app = create_app(
        forwarder,
        CallerKeys(open_mode=True),
        IngressSettings(),
        extra_routes=[traces_route(store, CallerKeys(open_mode=True))],
    )
    server = uvicorn.Server(
        uvicorn.Config(Recording(app), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_the_answer_goes_to_stdout_and_the_default_body_is_an_empty_object(url: str) -> None:
    ran = clrk("invoke", "echo", "--url", url)
    assert ran.exit_code == 0, ran.stderr
    assert json.loads(json.loads(ran.stdout)["received"])["data"] == {}
    assert ran.stderr == ""
    sent = SEEN[-1]
    assert sent["x-clrk-taskagent"] == "default/echo"
    assert sent["content-type"] == "application/json"


def test_the_data_reaches_the_agent_as_sent(url: str) -> None:
    ran = clrk("invoke", "echo", "--url", url, "--data", '{"prompt": "hi", "n": 1.50}')
    assert ran.exit_code == 0, ran.stderr
    received = json.loads(ran.stdout)
    assert '"n": 1.50' in received["received"], "the body travels byte for byte"


def test_data_from_a_file_and_from_stdin(url: str, tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text('{"from": "file"}')
    from_file = clrk("invoke", "echo", "--url", url, "--data", f"@{body}")
    from_stdin = clrk("invoke", "echo", "--url", url, "--data", "-", stdin=b'{"from": "stdin"}')
    assert '"from": "file"' in json.loads(from_file.stdout)["received"]
    assert '"from": "stdin"' in json.loads(from_stdin.stdout)["received"]


def test_the_namespace_comes_from_the_name_or_the_option(url: str) -> None:
    assert clrk("invoke", "team/echo", "--url", url).exit_code == 0
    assert clrk("invoke", "echo", "-n", "team", "--url", url).exit_code == 0
    missing = clrk("invoke", "echo", "-n", "elsewhere", "--url", url)
    assert missing.exit_code == 1
    assert missing.stderr == "error: unknown_agent: no TaskAgent elsewhere/echo\n"


def test_headers_are_passed_on(url: str) -> None:
    ran = clrk("invoke", "echo", "--url", url, "-H", "X-Request-Source: tests", "--header", "Content-Type:text/json")
    assert ran.exit_code == 0, ran.stderr
    assert SEEN[-1]["x-request-source"] == "tests"
    assert SEEN[-1]["content-type"] == "text/json", "a --header replaces a default"


def test_a_failed_invocation_exits_1_with_the_errors_message(url: str) -> None:
    ran = clrk("invoke", "broken", "--url", url)
    assert ran.exit_code == 1
    assert ran.stdout == ""
    assert ran.stderr.startswith("error: agent_failed: the agent exited with code 3 (invocation ")
    assert len(ran.stderr.split("(invocation ")[1].rstrip(")\n")) >= 32


def test_an_agents_own_error_body_is_printed_too(url: str) -> None:
    ran = clrk("invoke", "picky", "--url", url)
    assert ran.exit_code == 1
    assert json.loads(ran.stdout) == {"why": "prompt too long"}
    assert ran.stderr.startswith("error: HTTP 422 Unprocessable Entity (invocation ")


def test_verbose_reports_id_status_duration_and_tokens(url: str) -> None:
    ran = clrk("invoke", "costly", "--url", url, "--verbose")
    assert ran.exit_code == 0, ran.stderr
    assert json.loads(ran.stdout) == {"answer": "Paris."}
    lines = ran.stderr.splitlines()
    assert lines[0].startswith("invocation: ") and len(lines[0]) > len("invocation: ") + 30
    assert lines[1] == "status: 200 OK"
    assert lines[2].startswith("duration: ") and lines[2].endswith("s")
    assert lines[3] == "tokens: 150 in, 25 out (2 model calls)"


def test_verbose_without_model_calls_says_tokens_unknown(url: str) -> None:
    ran = clrk("invoke", "echo", "--url", url, "-v")
    assert ran.stderr.splitlines()[3] == "tokens: unknown"


def test_the_url_may_come_from_clrk_url(url: str) -> None:
    assert clrk("invoke", "echo", env={"CLRK_URL": url}).exit_code == 0


def test_data_that_is_not_json_is_a_usage_error(url: str) -> None:
    ran = clrk("invoke", "echo", "--url", url, "--data", "{prompt: hi}")
    assert ran.exit_code == 2
    flat = " ".join(ran.stderr.replace("│", " ").split())
    assert "--data" in flat and "not JSON" in flat


def test_nothing_listening_is_one_clear_line() -> None:
    ran = clrk("invoke", "echo", "--url", "http://127.0.0.1:9")
    assert ran.exit_code == 1
    assert ran.stderr.startswith("error: http://127.0.0.1:9: nothing answers there (ConnectError)")
