"""The shim stamps every envelope with its invocation's deadline and trace context (``stamp``):
what an agent started before its request can learn only from its stdin. Whatever a request said
of either attribute is dropped; the rest of the envelope is kept byte for byte."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clrk_runtime.protocol.envelope import (
    DEADLINE_ATTRIBUTE,
    INVOCATION_ATTRIBUTE,
    STRUCTURED,
    TRACE_ATTRIBUTE,
    build_envelope,
    stamp,
)

INVOCATION = "01a247a9-0000-7000-8000-000000000001"
DEADLINE = "2026-01-02T03:05:45.678Z"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
FORGED_TRACE = "00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-01"


def _built(headers: dict[str, str], body: bytes) -> bytes:
    return build_envelope(headers, body, invocation_id=INVOCATION, source="/clrk/shim").body


def _members(envelope: bytes) -> list[tuple[str, Any]]:
    """The envelope's members in order, a name given twice kept twice (``json.loads`` would keep
    only the last)."""
    objects: list[list[tuple[str, Any]]] = []

    def keep(items: list[tuple[str, Any]]) -> dict[str, Any]:
        objects.append(items)
        return dict(items)

    json.loads(envelope, object_pairs_hook=keep)
    return objects[-1]  # the outermost object comes last


def _shapes() -> list[tuple[str, dict[str, str], bytes]]:
    """A request of each shape that says something of both stamped attributes."""
    event = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "/caller",
        "type": "com.example.ask",
        DEADLINE_ATTRIBUTE: "2099-01-01T00:00:00.000Z",
        TRACE_ATTRIBUTE: FORGED_TRACE,
        "data": {"q": 1},
    }
    binary = {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": "evt-1",
        "ce-source": "/caller",
        "ce-type": "com.example.ask",
        f"ce-{DEADLINE_ATTRIBUTE}": "2099-01-01T00:00:00.000Z",
        f"ce-{TRACE_ATTRIBUTE}": FORGED_TRACE,
    }
    return [
        ("structured", {"content-type": STRUCTURED}, json.dumps(event).encode()),
        ("binary", binary, b'{"q": 1}'),
        ("wrapped", {"content-type": "application/json", "traceparent": FORGED_TRACE}, b'{"q": 1}'),
        ("base64", {"content-type": "application/octet-stream"}, b"\x00\xffbytes"),
    ]


@pytest.mark.parametrize(("shape", "headers", "body"), _shapes(), ids=[shape for shape, _, _ in _shapes()])
def test_each_shape_gets_the_shims_deadline_and_trace_once(shape: str, headers: dict[str, str], body: bytes) -> None:
    built = _built(headers, body)
    stamped = stamp(built, deadline=DEADLINE, traceparent=TRACEPARENT)
    names = [name for name, _ in _members(stamped)]
    assert names.count(DEADLINE_ATTRIBUTE) == names.count(TRACE_ATTRIBUTE) == 1, names
    event = json.loads(stamped)
    assert (event[DEADLINE_ATTRIBUTE], event[TRACE_ATTRIBUTE]) == (DEADLINE, TRACEPARENT), "the request's dropped"
    assert event[INVOCATION_ATTRIBUTE] == INVOCATION
    unstamped = json.loads(built)
    assert DEADLINE_ATTRIBUTE not in unstamped and TRACE_ATTRIBUTE not in unstamped
    assert {k: v for k, v in event.items() if k not in (DEADLINE_ATTRIBUTE, TRACE_ATTRIBUTE)} == unstamped
    if shape == "base64":
        assert base64.b64decode(event["data_base64"]) == body


def test_without_tracing_there_is_no_traceparent() -> None:
    stamped = stamp(_built({"content-type": "application/json"}, b"{}"), deadline=DEADLINE, traceparent="")
    event = json.loads(stamped)
    assert event[DEADLINE_ATTRIBUTE] == DEADLINE
    assert TRACE_ATTRIBUTE not in event


def test_the_rest_is_kept_byte_for_byte() -> None:
    """``jq '.data'`` still yields the caller's bytes: spacing, number forms, key order."""
    data = b'{"b": 1.50,   "a": [1e3, -0.0], "s": "\\u00e9"}'
    built = _built({"content-type": "application/json"}, data)
    stamped = stamp(built, deadline=DEADLINE, traceparent=TRACEPARENT)
    assert stamped.startswith(b"{")
    assert stamped.endswith(built[1:].lstrip()), "everything after the stamped members is the builder's"
    assert data in stamped


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=10,
    )
)
def test_any_json_data_survives_the_stamp(data: object) -> None:
    built = _built({"content-type": "application/json"}, json.dumps(data).encode())
    event = json.loads(stamp(built, deadline=DEADLINE, traceparent=TRACEPARENT))
    assert event["data"] == data
    assert event[DEADLINE_ATTRIBUTE] == DEADLINE
