"""``clrk dev`` runs a TaskSchedule as a cluster does: posted to the ingress's schedule route with
the agent's token (made from the dev server's own platform key), no Caller key needed, signed to
the shim like any request. The server in process, with a real shim and sandbox behind it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx

from clrk.api.schedules import TaskSchedule
from clrk.dev.scheduling import schedule_request
from clrk.dev.serving import DevServer
from clrk.dev.settings import DevSettings
from tests.support.jq_bot import ECHO_AGENT

SCHEDULE = {
    "apiVersion": "clrk.dev/v1alpha1",
    "kind": "TaskSchedule",
    "metadata": {"name": "nightly", "namespace": "default"},
    "spec": {"agent": "echo", "schedule": "0 3 * * *", "data": {"report": True}},
}


async def test_a_scheduled_run_needs_no_caller_key_and_reaches_the_agent(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "taskagent.yaml").write_text(ECHO_AGENT.format(script="cat"))
    settings = DevSettings(apply=[str(manifests)], port=0, state_dir=tmp_path / "state", sandbox="plain", auth="keys")
    server = DevServer(settings, environ={})
    await server.start()
    try:
        headers, body = schedule_request(TaskSchedule.model_validate(SCHEDULE), datetime(2026, 1, 1, 3, tzinfo=UTC))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:
            keyless = await client.post("/", json={}, headers={"X-Clrk-TaskAgent": "default/echo"})
            # Someone without a key tries the schedule route with tokens of their own making.
            guesses = [
                await client.post(f"/_clrk/schedules/default/echo/{token}", headers=headers, content=body)
                for token in ("TOKEN-FILLED-IN-AT-APPLY", "A" * 43, "x", "%00")
            ]
            assert not server.records, "a guessed token ran the agent"
            status = await server._post(headers, body)  # what the scheduler sends at each run
            healthy = await client.get("/healthz")
    finally:
        await server.stop()
    assert keyless.status_code == 401, "keys mode: a caller needs a key"
    assert [(g.status_code, g.json()["error"]["type"]) for g in guesses] == [(404, "unknown_schedule")] * 4
    assert status == 200 and healthy.status_code == 200
    assert [(r.agent, r.status, r.caller) for r in server.records] == [("default/echo", 200, None)]
