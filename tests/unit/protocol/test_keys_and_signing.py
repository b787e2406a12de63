"""Per-namespace keys and the ingress's request signature: what a holder of one namespace's key
can and cannot do."""

from __future__ import annotations

from typing import Any

import pytest

from clrk_runtime.protocol.keys import namespace_key, namespace_of
from clrk_runtime.protocol.signing import InvalidSignature, sign_request, verify_request

PLATFORM = b"platform-key-0123456789"
REQUEST: dict[str, Any] = {
    "method": "POST",
    "agent": "team-a/bot",
    "invocation_id": "0190f3c0-0000-7000-8000-000000000001",
    "timeout_ms": "9000",
    "content_type": "application/cloudevents+json",
    "body": b'{"specversion":"1.0"}',
}


def test_each_namespace_and_purpose_gets_its_own_key() -> None:
    keys = {namespace_key(PLATFORM, purpose, ns) for purpose in ("proxy-token", "request") for ns in ("a", "b")}
    assert len(keys) == 4
    assert namespace_key(PLATFORM, "request", "a") == namespace_key(PLATFORM, "request", "a")
    assert namespace_key(b"other", "request", "a") != namespace_key(PLATFORM, "request", "a")
    assert namespace_key(PLATFORM, "request", "a").isascii()


@pytest.mark.parametrize("namespace", ["", "a/b"])
def test_a_malformed_namespace_is_refused(namespace: str) -> None:
    with pytest.raises(ValueError, match="not a namespace"):
        namespace_key(PLATFORM, "request", namespace)


def test_namespace_of_an_agent_reference() -> None:
    assert namespace_of("team-a/bot") == "team-a"
    for bad in ("bot", "/bot", "a/", "a/b/c"):
        with pytest.raises(ValueError, match="namespace/name"):
            namespace_of(bad)


def test_a_signed_request_verifies_within_the_tolerance() -> None:
    key = namespace_key(PLATFORM, "request", "team-a")
    value = sign_request(key, now=1000.0, **REQUEST)
    verify_request(value, key, now=1000.0 + 299, **REQUEST)
    with pytest.raises(InvalidSignature, match="stale"):
        verify_request(value, key, now=1000.0 + 301, **REQUEST)


@pytest.mark.parametrize(
    "change",
    [
        {"agent": "team-a/other"},
        {"invocation_id": "0190f3c0-0000-7000-8000-000000000002"},
        {"timeout_ms": "600000"},
        {"content_type": "application/json"},
        {"body": b'{"specversion":"1.0","x":1}'},
        {"method": "DELETE"},
    ],
)
def test_any_change_to_what_was_signed_is_refused(change: dict[str, object]) -> None:
    key = namespace_key(PLATFORM, "request", "team-a")
    value = sign_request(key, now=1000.0, **REQUEST)
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_request(value, key, now=1000.0, **{**REQUEST, **change})


def test_another_namespaces_key_does_not_verify() -> None:
    value = sign_request(namespace_key(PLATFORM, "request", "team-b"), now=1000.0, **REQUEST)
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_request(value, namespace_key(PLATFORM, "request", "team-a"), now=1000.0, **REQUEST)


@pytest.mark.parametrize("value", [None, "", "v1=abc", "t=x,v1=abc", "t=1000"])
def test_a_missing_or_malformed_signature_is_refused(value: str | None) -> None:
    with pytest.raises(InvalidSignature):
        verify_request(value, b"k", now=1000.0, **REQUEST)
