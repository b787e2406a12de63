"""Invocation ids and the one error body every clrk server answers with."""

import json
import time

import pytest

from clrk_runtime.protocol.errors import error_body, error_document
from clrk_runtime.protocol.ids import is_event_id, is_invocation_id, new_invocation_id


def test_minted_ids_are_uuidv7_and_sort_by_time() -> None:
    first = new_invocation_id()
    time.sleep(0.002)
    second = new_invocation_id()
    assert first[14] == second[14] == "7", "the version nibble of a UUIDv7"
    assert first < second
    assert is_invocation_id(first) and is_event_id(first)


@pytest.mark.parametrize("value", ["order-42", "urn:uuid:1234", "a.b_c", "x" * 128])
def test_event_ids_a_caller_may_give_are_not_invocation_ids(value: str) -> None:
    """A caller's CloudEvent id travels in the envelope; it never names an invocation."""
    assert is_event_id(value)
    assert not is_invocation_id(value)


@pytest.mark.parametrize("value", ["", "-lead", "a b", "../x", "x" * 129, "é", "a\nb", "a/b"])
def test_event_ids_that_are_refused(value: str) -> None:
    assert not is_event_id(value)


@pytest.mark.parametrize(
    "value",
    [
        "0190f3c0-0000-4000-8000-000000000001",  # a UUIDv4
        "0190F3C0-0000-7000-8000-000000000001",  # not the canonical (lower-case) form
        "urn:uuid:0190f3c0-0000-7000-8000-000000000001",
        "0190f3c0-0000-7000-8000-000000000001\n",
    ],
)
def test_only_the_platforms_form_is_an_invocation_id(value: str) -> None:
    assert not is_invocation_id(value)


def test_the_error_body_has_one_shape() -> None:
    assert error_document("no_capacity", "retry later") == {"error": {"type": "no_capacity", "message": "retry later"}}
    document = json.loads(error_body("agent_failed", "exit 3", "inv-1", exitCode=3))
    assert document == {"error": {"type": "agent_failed", "message": "exit 3", "invocationId": "inv-1", "exitCode": 3}}
