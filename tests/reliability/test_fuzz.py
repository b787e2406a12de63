"""Property-based fuzzing of a real ingress on a real socket (hypothesis, through httpx).

Whatever a caller sends (any agent header, ``ce-*`` headers, content type, timeout header and
body within bounded sizes), the ingress never answers 5xx, every 4xx is the JSON error shape, every
2xx carries ``X-Clrk-Invocation-Id``, and a secret-looking value in the test process's
environment never appears in any answer, even from an agent that prints its whole environment.
After the fuzzing, no agent process and no file descriptor is left behind.

Runs are derandomized (the same examples every run) so that CI never flakes; set
``CLRK_FUZZ_EXPLORE=1`` to draw fresh examples, ``CLRK_FUZZ_EXAMPLES=N`` to change how many.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.support.bad_input import (
    BAD_INPUT_AGENT,
    BAD_INPUT_ENV_AGENT,
    BAD_INPUT_MAX_BODY,
    BAD_INPUT_SANDBOX_UIDS,
    BadInputIngress,
)
from tests.support.processes import live_processes

SECRET_NAME = "CLRK_RELIABILITY_FUZZ_API_KEY"
SECRET = "sk-ant-fuzz-" + secrets.token_hex(16)
"""Set in this process's environment for the whole module (see ``bad_input_secret``)."""

FUZZ = settings(
    max_examples=int(os.environ.get("CLRK_FUZZ_EXAMPLES", "150")),
    deadline=None,
    derandomize=os.environ.get("CLRK_FUZZ_EXPLORE") != "1",
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# What an HTTP/1.1 header value may hold (h11 refuses the rest before the app; test_bad_input.py
# covers those): visible ASCII and obs-text, spaces and tabs inside.
_VALUE_CHARS = st.sampled_from([*map(chr, range(0x21, 0x7F)), *map(chr, range(0x80, 0x100)), " ", "\t"])
header_values = st.text(_VALUE_CHARS, max_size=120).map(lambda v: v.strip(" \t").encode("latin-1"))
agents = st.one_of(
    st.just(BAD_INPUT_AGENT.encode()),
    st.just(BAD_INPUT_ENV_AGENT.encode()),
    st.sampled_from([BAD_INPUT_AGENT, BAD_INPUT_ENV_AGENT, "default/nope", "Default/cat", "cat", ""]).map(str.encode),
    st.from_regex(r"\A[a-z0-9-]{1,70}/[a-z0-9-]{1,70}\Z").map(str.encode),
    header_values,
)
content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/cloudevents+json",
            "application/vnd.x+json",
            "text/plain",
            "application/octet-stream",
            "multipart/form-data; boundary=x",
        ]
    ).map(str.encode),
    header_values,
)
some_ce_headers = st.dictionaries(
    st.sampled_from(["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-subject", "ce-dataschema"]),
    st.one_of(st.sampled_from([b"1.0", b"0.3", b"evt-1", b"/s"]), header_values),
    max_size=7,
)
valid_ce_headers = st.fixed_dictionaries(
    {
        "ce-specversion": st.just(b"1.0"),
        "ce-id": st.from_regex(rb"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,40}\Z"),
        "ce-source": header_values.filter(bool),
        "ce-type": header_values.filter(bool),
    },
    optional={"ce-subject": header_values, "ce-time": header_values, "ce-dataschema": header_values},
)
ce_headers = st.one_of(st.just({}), valid_ce_headers, some_ce_headers)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
bodies = st.one_of(
    st.binary(max_size=BAD_INPUT_MAX_BODY + 200),
    json_values.map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode()),
    st.sampled_from([b"", b"{}", b"[]", b"null", b"{", b"\xff\xfe", b"x" * (BAD_INPUT_MAX_BODY + 1)]),
)
# A valid but short deadline is rightly a 504 (the agent is killed): valid ones here are long.
timeouts = st.one_of(
    st.none(),
    st.integers(5_000, 10**12).map(lambda n: str(n).encode()),
    header_values.filter(lambda v: not (v.isdigit() and 0 < int(v) < 5_000)),
)


@pytest.fixture(scope="module", autouse=True)
def bad_input_secret() -> Iterator[str]:
    """A secret-looking value in this process's environment, which no answer may contain."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SECRET_NAME, SECRET)
        yield SECRET


@pytest.fixture(scope="module")
def bad_input_client(bad_input_ingress: BadInputIngress) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=bad_input_ingress.url, timeout=15) as client:
        yield client


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _agent_processes() -> list[int]:
    """Live (non-zombie) processes running as the agents' uids."""
    return list(live_processes(BAD_INPUT_SANDBOX_UIDS))


@pytest.fixture(scope="module")
def bad_input_baseline(bad_input_client: httpx.Client) -> dict[str, int]:
    """File descriptors open once the ingress is serving and one request has warmed it up."""
    assert bad_input_client.post("/", json={}, headers={"X-Clrk-TaskAgent": BAD_INPUT_AGENT}).status_code == 200
    return {"fds": _open_fds()}


def note_status(status: int) -> None:
    event(f"status {status}")  # shown by --hypothesis-show-statistics


def check_answer(response: httpx.Response) -> None:
    """The properties every answer has, whatever was sent."""
    assert response.status_code < 500, response.text
    raw = b"".join(k + b": " + v for k, v in response.headers.raw) + response.content
    assert SECRET.encode() not in raw, "a secret of the host's environment leaked into an answer"
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert isinstance(error["type"], str) and error["type"]
        assert isinstance(error["message"], str) and error["message"]
    else:
        assert response.status_code == 200
        assert response.headers["x-clrk-invocation-id"]


@FUZZ
@given(agent=agents, content_type=st.none() | content_types, ce=ce_headers, timeout=timeouts, body=bodies)
def test_fuzz_any_request_gets_a_well_formed_answer(
    bad_input_baseline: dict[str, int],
    bad_input_client: httpx.Client,
    agent: bytes,
    content_type: bytes | None,
    ce: dict[str, bytes],
    timeout: bytes | None,
    body: bytes,
) -> None:
    headers: dict[str, Any] = {"X-Clrk-TaskAgent": agent, **ce}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if timeout is not None:
        headers["X-Clrk-Timeout-Ms"] = timeout
    response = bad_input_client.post("/", headers=headers, content=body)
    check_answer(response)
    note_status(response.status_code)


_optional_attributes = {
    "datacontenttype": st.one_of(st.just("application/json"), json_values),
    "data": json_values,
    "data_base64": st.one_of(st.just("aGk="), json_values),
    "time": st.one_of(st.just("2026-01-01T00:00:00Z"), json_values),
    "subject": json_values,
}
_extensions = st.dictionaries(st.text(max_size=12), json_values, max_size=3)
plausible_events = st.fixed_dictionaries(
    {
        "specversion": st.just("1.0"),
        "id": st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,40}\Z"),
        "source": st.text(min_size=1, max_size=30),
        "type": st.text(min_size=1, max_size=30),
    },
    optional=_optional_attributes,
)
weird_events = st.fixed_dictionaries(
    {},
    optional={
        "specversion": st.one_of(st.just("1.0"), st.just("0.3"), json_values),
        "id": st.one_of(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,20}\Z"), json_values),
        "source": st.one_of(st.just("/s"), json_values),
        "type": st.one_of(st.just("t"), json_values),
        **_optional_attributes,
    },
)
structured_events = st.one_of(plausible_events, weird_events).flatmap(
    lambda event: _extensions.map(lambda extra: {**extra, **event})
)


@FUZZ
@given(event=structured_events, agent=st.sampled_from([BAD_INPUT_AGENT, BAD_INPUT_ENV_AGENT]))
def test_fuzz_structured_cloudevents(
    bad_input_baseline: dict[str, int], bad_input_client: httpx.Client, event: dict[str, Any], agent: str
) -> None:
    headers = {"X-Clrk-TaskAgent": agent, "Content-Type": "application/cloudevents+json"}
    response = bad_input_client.post("/", headers=headers, content=json.dumps(event).encode())
    check_answer(response)
    note_status(response.status_code)
    if response.status_code == 200:
        assert response.headers["x-clrk-invocation-id"] != event["id"], "the platform mints the invocation id"
        if agent == BAD_INPUT_AGENT:
            assert response.json()["id"] == event["id"], "a caller's event keeps its id"
        if agent == BAD_INPUT_AGENT and "data" in event and "data_base64" not in event:
            assert response.json()["data"] == event["data"], "a caller's event keeps its data, falsy or not"


@FUZZ
@given(value=json_values)
def test_fuzz_json_bodies_reach_the_agent_untouched(
    bad_input_baseline: dict[str, int], bad_input_client: httpx.Client, value: Any
) -> None:
    body = json.dumps(value).encode()
    response = bad_input_client.post(
        "/", headers={"X-Clrk-TaskAgent": BAD_INPUT_AGENT, "Content-Type": "application/json"}, content=body
    )
    check_answer(response)
    if len(body) > BAD_INPUT_MAX_BODY:
        assert response.status_code == 413
    else:
        assert response.status_code == 200
        event = response.json()
        assert "data" in event, 'every JSON value, null and "" included, is the event\'s data'
        assert event["data"] == value and type(event["data"]) is type(value)  # false is not 0


def test_the_json_empty_string_reaches_the_agent(bad_input_client: httpx.Client) -> None:
    response = bad_input_client.post(
        "/", headers={"X-Clrk-TaskAgent": BAD_INPUT_AGENT, "Content-Type": "application/json"}, content=b'""'
    )
    assert response.status_code == 200
    assert response.json().get("data") == ""


def test_the_env_agent_does_print_its_environment(bad_input_client: httpx.Client) -> None:
    """The leak check above means something: this agent shows its environment in its answer."""
    response = bad_input_client.post("/", json={"probe": 1}, headers={"X-Clrk-TaskAgent": BAD_INPUT_ENV_AGENT})
    assert response.status_code == 200
    assert "PATH=" in response.text and "CLRK_METADATA_" in response.text
    assert SECRET not in response.text
    assert os.environ[SECRET_NAME] == SECRET, "the secret was in this process's environment all along"


def test_fuzzing_left_no_process_and_no_descriptor_behind(
    bad_input_baseline: dict[str, int], bad_input_client: httpx.Client
) -> None:
    """Runs last in this module: every agent process is gone and descriptors did not pile up."""
    assert _agent_processes() == []
    assert _open_fds() <= bad_input_baseline["fds"] + 8
    assert bad_input_client.post("/", json={}, headers={"X-Clrk-TaskAgent": BAD_INPUT_AGENT}).status_code == 200
