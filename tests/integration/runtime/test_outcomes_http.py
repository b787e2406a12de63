"""Every outcome, through the shim's real HTTP endpoint, for both sandbox kinds."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest

from tests.support.runtime import KINDS, agent, serving, settings_for

pytestmark = pytest.mark.parametrize("kind", KINDS)


async def test_json_body_is_data_and_stdout_is_the_answer(kind: str, shim_root: Path) -> None:
    async with serving(settings_for(kind, shim_root, [agent("echo.sh")])) as (client, _):
        body = b'{"question": "why?", "n": 1.50}'
        response = await client.post("/", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    event = response.json()
    assert event["specversion"] == "1.0"
    assert event["data"] == json.loads(body)
    assert event["id"] == response.headers["x-clrk-invocation-id"]


async def test_cloudevents_keep_their_id_and_the_shim_mints_the_invocation_id(kind: str, shim_root: Path) -> None:
    async with serving(settings_for(kind, shim_root, [agent("echo.sh")])) as (client, _):
        binary = await client.post(
            "/",
            content=b"plain words",
            headers={
                "ce-specversion": "1.0",
                "ce-id": "evt-42",
                "ce-source": "/test",
                "ce-type": "t",
                "content-type": "text/plain",
            },
        )
        structured = await client.post(
            "/",
            content=json.dumps({"specversion": "1.0", "id": "evt-43", "source": "/s", "type": "t", "data": [1]}),
            headers={"content-type": "application/cloudevents+json"},
        )
    assert binary.json()["id"] == "evt-42"
    assert binary.headers["x-clrk-invocation-id"] == binary.json()["clrkinvocationid"] != "evt-42"
    assert base64.b64decode(binary.json()["data_base64"]) == b"plain words"
    assert structured.json()["id"] == "evt-43"
    assert structured.headers["x-clrk-invocation-id"] == structured.json()["clrkinvocationid"] != "evt-43"
    assert structured.json()["data"] == [1]


async def test_failure_is_502_and_stderr_goes_to_the_log_only(
    kind: str, shim_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clrk_runtime.agent")
    async with serving(settings_for(kind, shim_root, [agent("fail.sh")])) as (client, _):
        response = await client.post("/", json={})
    assert response.status_code == 502
    error = response.json()["error"]
    invocation_id = response.headers["x-clrk-invocation-id"]
    assert (error["type"], error["exitCode"], error["invocationId"]) == ("agent_failed", 3, invocation_id)
    assert b"partial output" not in response.content
    assert b"went wrong" not in response.content
    assert f"[{invocation_id}] something went wrong" in caplog.messages


async def test_deadline_is_504(kind: str, shim_root: Path) -> None:
    settings = settings_for(kind, shim_root, [agent("slow.sh"), "30"], timeout="30s")
    async with serving(settings) as (client, _):
        response = await client.post("/", json={}, headers={"x-clrk-timeout-ms": "300"})
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "deadline_exceeded"


async def test_declared_content_type_and_status(kind: str, shim_root: Path) -> None:
    async with serving(settings_for(kind, shim_root, [agent("headers.sh")])) as (client, _):
        response = await client.post("/", json={})
    assert (response.status_code, response.headers["content-type"]) == (201, "text/csv")
    assert response.text == "a,b\n1,2\n"


async def test_caps(kind: str, shim_root: Path) -> None:
    settings = settings_for(kind, shim_root, [agent("big.sh")], stdout_cap=1000, stdin_cap=100)
    async with serving(settings) as (client, _):
        too_much_out = await client.post("/", json={})
        too_much_in = await client.post("/", json={"x": "y" * 200})
    assert too_much_out.status_code == 502
    assert too_much_out.json()["error"]["type"] == "response_too_large"
    assert too_much_in.status_code == 413
    assert too_much_in.json()["error"]["type"] == "request_too_large"
    assert "x-clrk-invocation-id" in too_much_in.headers


async def test_probes(kind: str, shim_root: Path) -> None:
    async with serving(settings_for(kind, shim_root, [agent("echo.sh")], warm_pool=1)) as (
        client,
        runtime,
    ):
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        assert runtime.stats.pool.warm == 1
