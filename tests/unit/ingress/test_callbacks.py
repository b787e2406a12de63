"""Async invocations' callbacks: which URLs may be called, the signed CloudEvent, the retries,
to a real HTTP receiver on port 0, with the runs in a real SQLite store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from clrk.ingress import CallbackSender, CallbackState, FileRunStore, Result, RunRecord, callback_secret
from clrk.ingress.callbacks import CALLBACK_CONTENT_TYPE, FINISHED_EVENT_TYPE, check_callback_url
from clrk_runtime.protocol.ids import new_invocation_id
from clrk_runtime.protocol.invocations import Status
from clrk_runtime.protocol.keys import namespace_key
from tests.support.callback_receiver import CallbackReceiver

KEY = b"platform-key-for-callback-tests"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FileRunStore]:
    store = await FileRunStore.open(tmp_path / "runs.sqlite3", retention_s=60, max_result_bytes_total=1 << 20)
    yield store
    await store.aclose()


def _secret(namespace: str) -> str:
    return callback_secret(namespace_key(KEY, "callback", namespace))


async def _finished(store: FileRunStore, url: str, body: bytes = b'{"ok":true}') -> tuple[RunRecord, Result]:
    record = RunRecord(new_invocation_id(), "team-a/echo", None, b"{}", 30.0, 1_700_000_000.0)
    record = record.replace(callback=CallbackState(url))
    await store.create(record)
    final = record.replace(status=Status.SUCCEEDED, finished_at=1_700_000_001.0, http_status=200, exit_code=0)
    result = Result(200, "application/json", body)
    assert await store.finish(final.replace(content_type="application/json"), result)
    stored = await store.get(record.invocation_id)
    assert stored is not None
    return stored, result


@pytest.mark.parametrize(
    ("url", "loopback", "reason"),
    [
        ("ftp://example.com/x", True, "http:// or https://"),
        ("https://user:pw@example.com/x", True, "user info"),
        ("https://@example.com/x", True, "user info"),
        ("http:///x", True, "no host"),
        ("http://169.254.169.254/latest/meta-data", True, "link-local"),
        ("http://[fe80::1]/x", True, "link-local"),
        ("http://[::ffff:169.254.169.254]/x", True, "link-local"),
        ("http://metadata.google.internal/x", True, "metadata"),
        ("http://127.0.0.1:8080/x", False, "loopback"),
        ("http://localhost/x", False, "loopback"),
        ("http://[::1]/x", False, "loopback"),
        ("http://0.0.0.0/x", True, "not a unicast"),
        ("https://example.com/a b", True, "spaces"),
        ("https://example.com:99999/x", True, "not a URL"),
        ("https://example.com/" + "a" * 3000, True, "longer than"),
    ],
)
def test_unsafe_callback_urls_are_refused_saying_why(url: str, loopback: bool, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_callback_url(url, allow_loopback=loopback)


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("https://hooks.example.com/clrk?x=1", False),
        ("http://receiver.team-a.svc.cluster.local:8080/done", False),
        ("http://10.0.0.7/done", False),
        ("http://127.0.0.1:8080/x", True),
        ("http://localhost:9/x", True),
    ],
)
def test_safe_callback_urls_pass(url: str, loopback: bool) -> None:
    assert check_callback_url(url, allow_loopback=loopback) == url


def test_the_secret_is_a_standard_webhooks_secret_of_the_namespace_key() -> None:
    secret = _secret("team-a")
    assert secret.startswith("whsec_") and secret != _secret("team-b")
    signature = Webhook(secret).sign("id-1", datetime.now(UTC), b"body")
    assert signature.startswith("v1,")


async def test_one_signed_cloudevent_is_delivered_and_recorded(store: FileRunStore) -> None:
    with CallbackReceiver([204]) as receiver:
        record, result = await _finished(store, receiver.url, b'{"answer": "\xc3\xa9"}')
        sender = CallbackSender(store, _secret, allow_loopback=True, backoff=0.01)
        try:
            after = await sender.deliver(record, result)
        finally:
            await sender.aclose()
        (got,) = receiver.wait_for(1)
    assert got.headers["content-type"] == CALLBACK_CONTENT_TYPE
    assert got.headers["webhook-id"] == record.invocation_id
    event = Webhook(_secret("team-a")).verify(got.body, got.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(_secret("team-b")).verify(got.body, got.headers)
    assert event["type"] == FINISHED_EVENT_TYPE and event["source"] == "/clrk/ingress"
    assert event["id"] == event["subject"] == event["clrkinvocationid"] == record.invocation_id
    assert event["data"]["status"] == "succeeded" and event["data"]["httpStatus"] == 200
    assert event["data"]["result"] == {"contentType": "application/json", "body": '{"answer": "é"}'}
    assert "callback" not in event["data"]
    stored = await store.get(record.invocation_id)
    assert stored is not None and stored.callback is not None
    assert stored.callback.state == "delivered" and stored.callback.attempts == 1
    assert stored.callback.last_status == 204 and stored.callback.delivered_at is not None
    assert after.callback == stored.callback


async def test_a_body_that_is_not_utf8_goes_as_base64(store: FileRunStore) -> None:
    with CallbackReceiver() as receiver:
        record, result = await _finished(store, receiver.url, b"\xff\x00binary")
        sender = CallbackSender(store, _secret, allow_loopback=True)
        try:
            await sender.deliver(record, result)
        finally:
            await sender.aclose()
        (got,) = receiver.wait_for(1)
    assert json.loads(got.body)["data"]["result"] == {"contentType": "application/json", "bodyBase64": "/wBiaW5hcnk="}


async def test_failures_are_retried_with_the_same_bytes_until_delivered(store: FileRunStore) -> None:
    with CallbackReceiver([500, 503, 200]) as receiver:
        record, result = await _finished(store, receiver.url)
        sender = CallbackSender(store, _secret, allow_loopback=True, backoff=0.01, attempts=5)
        try:
            await sender.deliver(record, result)
        finally:
            await sender.aclose()
        got = receiver.wait_for(3)
    assert len({g.body for g in got}) == 1, "every try sends the same event"
    stored = await store.get(record.invocation_id)
    assert stored is not None and stored.callback is not None
    assert (stored.callback.state, stored.callback.attempts, stored.callback.last_status) == ("delivered", 3, 200)


async def test_a_receiver_that_stays_down_fails_after_the_last_attempt(store: FileRunStore) -> None:
    with CallbackReceiver() as receiver:
        url = receiver.url
    record, result = await _finished(store, url)  # nobody listens there any more
    seen: list[tuple[str, int]] = []
    original = store.update

    async def update(record: RunRecord) -> None:
        assert record.callback is not None
        seen.append((record.callback.state, record.callback.attempts))
        await original(record)

    store.update = update  # type: ignore[method-assign]
    sender = CallbackSender(store, _secret, allow_loopback=True, backoff=0.01, attempts=3)
    try:
        await sender.deliver(record, result)
    finally:
        await sender.aclose()
    assert seen == [("pending", 1), ("pending", 2), ("failed", 3)], "each attempt is recorded"
    stored = await store.get(record.invocation_id)
    assert stored is not None and stored.callback is not None
    assert stored.callback.state == "failed" and stored.callback.last_status is None
    assert stored.callback.last_error and "ConnectError" in stored.callback.last_error


async def test_410_stops_at_once(store: FileRunStore) -> None:
    with CallbackReceiver([410]) as receiver:
        record, result = await _finished(store, receiver.url)
        sender = CallbackSender(store, _secret, allow_loopback=True, backoff=0.01, attempts=5)
        try:
            await sender.deliver(record, result)
        finally:
            await sender.aclose()
        await asyncio.sleep(0)
        assert len(receiver.received) == 1
    stored = await store.get(record.invocation_id)
    assert stored is not None and stored.callback is not None
    assert (stored.callback.state, stored.callback.attempts, stored.callback.last_status) == ("failed", 1, 410)


async def test_a_name_resolving_to_loopback_gets_nothing_when_loopback_is_refused(store: FileRunStore) -> None:
    with CallbackReceiver() as receiver:
        url = receiver.url.replace("127.0.0.1", "localhost")  # a name: its addresses are checked when sent
        record, result = await _finished(store, url)
        sender = CallbackSender(store, _secret, allow_loopback=False, backoff=0.01, attempts=2)
        try:
            await sender.deliver(record, result)
        finally:
            await sender.aclose()
        assert receiver.received == []
    stored = await store.get(record.invocation_id)
    assert stored is not None and stored.callback is not None
    assert stored.callback.state == "failed" and "loopback" in (stored.callback.last_error or "")
