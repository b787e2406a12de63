"""A shim given a request key runs only what the clrk ingress signed, once; a shim without one
mints its own invocation ids. Attacks sent as a caller who reaches the shim's port would send
them, to the real shim app under uvicorn, with a real agent in a real sandbox."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from clrk_runtime.protocol.envelope import STRUCTURED, build_envelope
from clrk_runtime.protocol.ids import new_invocation_id
from clrk_runtime.protocol.keys import namespace_key
from clrk_runtime.protocol.signing import sign_request
from tests.support.runtime import agent, serving, settings_for

PLATFORM_KEY = b"platform-key-of-these-tests"
KEY = namespace_key(PLATFORM_KEY, "request", "team")  # settings_for serves team/bot
AGENT_LOG = "clrk_runtime.agent"


def _envelope(invocation_id: str, data: bytes = b'{"q": 1}') -> bytes:
    return build_envelope(
        {"content-type": "application/json"}, data, invocation_id=invocation_id, source="/clrk/ingress"
    ).body


def _signed(
    body: bytes,
    invocation_id: str,
    *,
    key: bytes = KEY,
    agent_ref: str = "team/bot",
    timeout_ms: str = "30000",
    now: float | None = None,
) -> dict[str, str]:
    """The headers the ingress sends with ``body``."""
    signature = sign_request(
        key,
        now=time.time() if now is None else now,
        method="POST",
        agent=agent_ref,
        invocation_id=invocation_id,
        timeout_ms=timeout_ms,
        content_type=STRUCTURED,
        body=body,
    )
    return {
        "content-type": STRUCTURED,
        "x-clrk-invocation-id": invocation_id,
        "x-clrk-timeout-ms": timeout_ms,
        "x-clrk-signature": signature,
    }


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "request.key"
    path.write_bytes(KEY + b"\n")  # a mounted Secret often ends with a newline
    return path


def _runs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage() for record in caplog.records if record.name == AGENT_LOG and "ran as" in record.getMessage()
    ]


async def test_a_signed_request_runs_with_the_ingresss_invocation_id(
    shim_root: Path, key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=AGENT_LOG)
    invocation_id = new_invocation_id()
    body = _envelope(invocation_id)
    async with serving(settings_for("plain", shim_root, [agent("ids.sh")], request_key_file=key_file)) as (client, _):
        response = await client.post("/", content=body, headers=_signed(body, invocation_id))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert response.headers["x-clrk-invocation-id"] == answer["env"] == invocation_id
    assert answer["envelope"]["clrkinvocationid"] == answer["envelope"]["id"] == invocation_id
    assert _runs(caplog) == [f"[{invocation_id}] ran as {invocation_id}"]


def _attacks() -> list[tuple[str, object]]:
    """(name, how the request is made from a good one), each refused with 401."""
    return [
        ("missing", "not signed"),
        ("stale", "stale"),
        ("other body", "does not match"),
        ("other agent", "does not match"),
        ("other namespace's key", "does not match"),
        ("other invocation id", "does not match"),
        ("longer deadline", "does not match"),
        ("malformed", "malformed"),
    ]


def _attack(name: str, victim_id: str) -> tuple[dict[str, str], bytes]:
    body = _envelope(victim_id)
    if name == "missing":  # a caller picks an id (another invocation's) and hopes the shim takes it
        return {"content-type": STRUCTURED, "x-clrk-invocation-id": victim_id}, body
    if name == "stale":  # a request captured six minutes ago, sent again
        return _signed(body, victim_id, now=time.time() - 360), body
    if name == "other body":  # a signed request, its body replaced in flight
        return _signed(body, victim_id), _envelope(victim_id, b'{"q": "rm -rf"}')
    if name == "other agent":  # signed for another agent of the same namespace
        return _signed(body, victim_id, agent_ref="team/other"), body
    if name == "other namespace's key":  # whoever holds another namespace's key
        return _signed(body, victim_id, key=namespace_key(PLATFORM_KEY, "request", "other")), body
    if name == "other invocation id":  # a good signature, the id swapped for another invocation's
        headers = _signed(body, new_invocation_id())
        return {**headers, "x-clrk-invocation-id": victim_id}, body
    if name == "longer deadline":
        headers = _signed(body, victim_id, timeout_ms="1000")
        return {**headers, "x-clrk-timeout-ms": "600000"}, body
    assert name == "malformed"
    return {**_signed(body, victim_id), "x-clrk-signature": "t=²,v1=AAAA"}, body


@pytest.mark.parametrize(("attack", "reason"), _attacks(), ids=[name for name, _ in _attacks()])
async def test_an_unsigned_or_badly_signed_request_is_refused_and_runs_nothing(
    shim_root: Path, key_file: Path, caplog: pytest.LogCaptureFixture, attack: str, reason: str
) -> None:
    caplog.set_level(logging.INFO, logger=AGENT_LOG)
    victim_id = new_invocation_id()
    headers, body = _attack(attack, victim_id)
    settings = settings_for("plain", shim_root, [agent("ids.sh")], request_key_file=key_file)
    async with serving(settings) as (client, _):
        wire = [(name.encode(), value.encode("latin-1")) for name, value in headers.items()]  # '²': one byte
        refused = await client.post("/", content=body, headers=wire)
        good_id = new_invocation_id()
        good_body = _envelope(good_id)
        served = await client.post("/", content=good_body, headers=_signed(good_body, good_id))
    assert refused.status_code == 401, refused.text
    error = refused.json()["error"]
    assert error["type"] == "unsigned_request"
    assert reason in error["message"]
    assert refused.headers["x-clrk-invocation-id"] == error["invocationId"] != victim_id
    assert served.status_code == 200, "the shim still serves the ingress's requests"
    assert _runs(caplog) == [f"[{good_id}] ran as {good_id}"], "the refused request ran nothing"


async def test_a_replayed_request_is_refused_and_runs_once(
    shim_root: Path, key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=AGENT_LOG)
    invocation_id = new_invocation_id()
    body = _envelope(invocation_id)
    headers = _signed(body, invocation_id)
    async with serving(settings_for("plain", shim_root, [agent("ids.sh")], request_key_file=key_file)) as (client, _):
        first = await client.post("/", content=body, headers=headers)
        again = await client.post("/", content=body, headers=headers)
    assert first.status_code == 200, first.text
    assert again.status_code == 409, again.text
    assert again.json()["error"]["type"] == "replayed_request"
    assert invocation_id in again.json()["error"]["message"]
    assert _runs(caplog) == [f"[{invocation_id}] ran as {invocation_id}"]


async def test_the_ingress_may_send_an_invocation_again_signed_anew(
    shim_root: Path, key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After a 503 the ingress retries, and an async invocation whose runner was lost runs again,
    each time under the same id with a fresh signature (a later time, what is left of the
    deadline): that is no replay. The captured first request still is."""
    caplog.set_level(logging.INFO, logger=AGENT_LOG)
    invocation_id = new_invocation_id()
    body = _envelope(invocation_id)
    first_headers = _signed(body, invocation_id, timeout_ms="30000")
    async with serving(settings_for("plain", shim_root, [agent("ids.sh")], request_key_file=key_file)) as (client, _):
        first = await client.post("/", content=body, headers=first_headers)
        anew = await client.post("/", content=body, headers=_signed(body, invocation_id, timeout_ms="29000"))
        captured = await client.post("/", content=body, headers=first_headers)
    assert (first.status_code, anew.status_code) == (200, 200), anew.text
    assert captured.status_code == 409, captured.text
    assert _runs(caplog) == [f"[{invocation_id}] ran as {invocation_id}"] * 2


async def test_a_shim_without_a_key_mints_its_own_ids(shim_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    """As with ``docker run``: X-Clrk-Invocation-Id from a caller is ignored, a CloudEvent keeps its
    id in the envelope only."""
    caplog.set_level(logging.INFO, logger=AGENT_LOG)
    chosen = new_invocation_id()
    headers = {
        "x-clrk-invocation-id": chosen,
        "ce-specversion": "1.0",
        "ce-id": "urn:uuid:0b5f1f5e-0000-4000-8000-000000000001",
        "ce-source": "/s",
        "ce-type": "t",
        "content-type": "application/json",
    }
    async with serving(settings_for("plain", shim_root, [agent("ids.sh")])) as (client, _):
        response = await client.post("/", content=b"{}", headers=headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    minted = response.headers["x-clrk-invocation-id"]
    assert minted != chosen and minted[14] == "7"
    assert answer["env"] == answer["envelope"]["clrkinvocationid"] == minted
    assert answer["envelope"]["id"] == "urn:uuid:0b5f1f5e-0000-4000-8000-000000000001"


@pytest.mark.parametrize("given", ["300", "600000"])
async def test_x_clrk_timeout_ms_can_only_shorten_the_deadline(shim_root: Path, given: str) -> None:
    """spec.timeout 2s, an agent that needs 30s: 300 ms ends it sooner, 600 s does not lengthen it."""
    settings = settings_for("plain", shim_root, [agent("slow.sh"), "30"], timeout="2s")
    async with serving(settings) as (client, _):
        response = await client.post("/", json={}, headers={"x-clrk-timeout-ms": given})
    assert response.status_code == 504, response.text
    message = response.json()["error"]["message"]
    assert message.endswith(f"deadline ({'0.3' if given == '300' else '2'}s) and was killed"), message


@pytest.mark.parametrize(
    "repeated",
    [
        [("ce-id", "a"), ("ce-id", "b")],
        [("ce-type", "t"), ("ce-type", "u")],
        [("content-type", "application/json"), ("content-type", "text/plain")],
    ],
    ids=["ce-id", "ce-type", "content-type"],
)
async def test_a_header_given_twice_is_400_and_runs_nothing(
    shim_root: Path, caplog: pytest.LogCaptureFixture, repeated: list[tuple[str, str]]
) -> None:
    caplog.set_level(logging.INFO, logger=AGENT_LOG)
    base = [("ce-specversion", "1.0"), ("ce-source", "/s"), ("content-type", "application/json")]
    base += [("ce-id", "a"), ("ce-type", "t")]
    names = {name for name, _ in repeated}
    headers = [pair for pair in base if pair[0] not in names] + repeated
    async with serving(settings_for("plain", shim_root, [agent("ids.sh")])) as (client, _):
        response = await client.post("/", content=b"{}", headers=headers)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "repeated_header"
    assert error["message"].startswith(f"header {repeated[0][0]}:")
    assert _runs(caplog) == []


def test_an_empty_key_file_stops_the_shim_at_start(tmp_path: Path) -> None:
    from clrk_runtime.service.verifying import read_request_key

    empty = tmp_path / "empty.key"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="CLRK_REQUEST_KEY_FILE"):
        read_request_key(empty)
    with pytest.raises(ValueError, match=r"CLRK_REQUEST_KEY_FILE\): cannot read"):
        read_request_key(tmp_path / "missing.key")
