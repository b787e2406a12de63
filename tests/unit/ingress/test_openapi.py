"""The OpenAPI document names every way to call and follow an invocation, and its schemas hold the
documents the ingress really writes (status document, outcome event, callback CloudEvent)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from clrk.ingress.callbacks import callback_event
from clrk.ingress.openapi import openapi_document
from clrk.ingress.records import CallbackState, Result, RunRecord, Usage
from clrk_runtime.protocol.invocations import Status
from clrk_runtime.protocol.streams import Outcome

DOCUMENT = openapi_document()


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    """``schema`` checked as OpenAPI 3.1 does (JSON Schema 2020-12), its refs into the document."""
    return Draft202012Validator({**schema, "components": DOCUMENT["components"]})


def component(name: str) -> Draft202012Validator:
    return validator({"$ref": f"#/components/schemas/{name}"})


def finished_run() -> RunRecord:
    return RunRecord(
        invocation_id="0193a4c2-0000-7000-8000-000000000001",
        agent="team-a/bot",
        caller="team-a/ops",
        envelope=b"{}",
        timeout_s=3600.0,
        created_at=1_800_000_000.0,
        status=Status.FAILED,
        started_at=1_800_000_001.0,
        finished_at=1_800_000_002.5,
        expires_at=1_800_086_402.5,
        http_status=502,
        exit_code=3,
        content_type="application/json",
        error={"type": "agent_failed", "message": "exit 3", "invocationId": "0193a4c2-…", "exitCode": 3},
        usage=Usage(input_tokens=12, output_tokens=34, model_calls=1),
        callback=CallbackState("https://hooks.example.com/x", "delivered", 1, 204, None, 1_800_000_003.0),
        attempts=1,
    )


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def test_the_status_document_schema_holds_a_real_one_and_refuses_a_wrong_one() -> None:
    documents = [finished_run().document(), finished_run().replace(status=Status.QUEUED, error=None).document()]
    for document in documents:
        component("StatusDocument").validate(document)
    with pytest.raises(ValidationError):
        component("StatusDocument").validate({**documents[0], "status": "exploded"})


def test_the_outcome_schema_holds_real_outcomes() -> None:
    error: dict[str, object] = {"type": "deadline_exceeded", "message": "…", "invocationId": "x"}
    for outcome in (Outcome("x", 200, 0, "application/json", body=b"\x00\xff"), Outcome("x", 504, error=error)):
        component("Outcome").validate(outcome.document())
    with pytest.raises(ValidationError):
        component("Outcome").validate({"invocationId": "x", "status": "200"})


@pytest.mark.parametrize("body", [b'{"ok": true}', b"\xff not utf-8"])
def test_the_callback_schema_holds_the_cloudevent_the_ingress_sends(body: bytes) -> None:
    hook = DOCUMENT["webhooks"]["invocationFinished"]["post"]
    assert {p["name"] for p in hook["parameters"]} == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    schema = hook["requestBody"]["content"]["application/cloudevents+json"]["schema"]
    event = json.loads(callback_event(finished_run(), Result(502, "application/json", body)))
    validator(schema).validate(event)
    result = event["data"]["result"]
    assert result.get("body", "").encode() == body or base64.b64decode(result.get("bodyBase64", "")) == body


def test_post_documents_streaming_and_async() -> None:
    post = DOCUMENT["paths"]["/"]["post"]
    assert {"Accept", "Prefer", "X-Clrk-Callback-Url"} <= {p["name"] for p in post["parameters"]}
    assert "text/event-stream" in post["responses"]["200"]["content"]
    assert "outcome" in post["responses"]["200"]["description"]
    accepted = post["responses"]["202"]
    assert "Location" in accepted["headers"]
    assert accepted["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/StatusDocument"}


def test_the_invocation_paths_and_their_answers() -> None:
    paths = DOCUMENT["paths"]
    status, result, events = (paths[f"/invocations/{{id}}{rest}"] for rest in ("", "/result", "/events"))
    assert set(status) == {"parameters", "get", "delete"}
    assert {"200", "401", "404", "409"} <= set(status["delete"]["responses"])
    assert {"200", "401", "404", "409", "410"} <= set(result["get"]["responses"])
    assert "result_not_ready" in result["get"]["responses"]["404"]["description"]
    assert "text/event-stream" in events["get"]["responses"]["200"]["content"]
    assert {p["name"] for p in events["get"]["parameters"]} == {"Last-Event-ID", "X-Clrk-Outcome-Body"}


def test_every_ref_resolves_and_the_document_is_json() -> None:
    assert DOCUMENT["openapi"].startswith("3.1")
    json.dumps(DOCUMENT)
    found = set(refs(DOCUMENT))
    assert found, "the schemas are shared through components"
    for ref in found:
        validator({"$ref": ref}).is_valid(None)  # raises when the ref does not resolve
        name = ref.removeprefix("#/components/schemas/")
        assert name in DOCUMENT["components"]["schemas"], ref
