"""One rule for reading a request's headers, at the ingress and the shim alike: a header that
decides what runs, or as whom, is refused when sent twice (two readers once took different
copies of ``ce-id``)."""

from __future__ import annotations

import pytest

from clrk_runtime.protocol.headers import RepeatedHeader, request_headers
from clrk_runtime.protocol.signing import InvalidSignature, sign_request, verify_request


def _raw(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in pairs]


@pytest.mark.parametrize(
    "name",
    [
        "ce-id",
        "Ce-Source",
        "ce-clrkinvocationid",
        "Content-Type",
        "X-Clrk-TaskAgent",
        "x-clrk-signature",
        "authorization",
    ],
)
def test_a_header_that_must_be_single_is_refused_naming_it(name: str) -> None:
    with pytest.raises(RepeatedHeader) as caught:
        request_headers(_raw((name, "a"), ("accept", "*/*"), (name.upper(), "b")))
    assert caught.value.message == f"header {name.lower()}: sent 2 times; send it once"
    assert caught.value.kind == "repeated_header"


def test_the_same_value_twice_is_refused_too() -> None:
    """Two equal copies are harmless today, but one rule is easier to keep than two."""
    with pytest.raises(RepeatedHeader):
        request_headers(_raw(("ce-id", "a"), ("ce-id", "a")))


def test_other_headers_are_joined_as_a_list_and_names_lower_cased() -> None:
    headers = request_headers(_raw(("Accept", "a/b"), ("accept", "c/d"), ("CE-ID", "x"), ("X-Other", "\xe9")))
    assert headers == {"accept": "a/b, c/d", "ce-id": "x", "x-other": "\xe9"}


@pytest.mark.parametrize("stamp", ["²", "1" * 400, "-5", " 7", "1.5"])
def test_a_signature_with_a_strange_time_is_invalid_not_a_crash(stamp: str) -> None:
    fields = {"method": "POST", "agent": "a/b", "invocation_id": "i", "timeout_ms": "", "content_type": ""}
    good = sign_request(b"k", now=1000.0, body=b"", **fields)
    forged = f"t={stamp},{good.split(',', 1)[1]}"
    with pytest.raises(InvalidSignature, match="malformed"):
        verify_request(
            forged,
            b"k",
            now=1000.0,
            method="POST",
            agent="a/b",
            invocation_id="i",
            timeout_ms="",
            content_type="",
            body=b"",
        )
