"""The ingress's OpenAPI 3.1 document, served at ``/openapi.json``.

It describes ``POST /`` (buffered, streamed with ``Accept: text/event-stream``, or async with
``Prefer: respond-async``), the ``/invocations/{id}`` routes that follow an async run, the
schedule route, and the callback a finished run sends (under ``webhooks``). Its schemas are the
wire contract's own shapes: the status document (:meth:`clrk.ingress.records.RunRecord.document`),
the ``outcome`` event (:class:`clrk_runtime.protocol.streams.Outcome`), the error body
(:func:`clrk_runtime.protocol.errors.error_document`); a unit test checks real documents
against them.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from clrk_runtime.protocol.invocations import CALLBACK_HEADER, MAX_ASYNC_TIMEOUT_S, MAX_SYNC_TIMEOUT_S, Status
from clrk_runtime.protocol.streams import HEARTBEAT_S, LINE_LIMIT, OUTCOME_BODY_HEADER

__all__ = ["openapi_document"]

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"$ref": "#/components/schemas/ErrorObject"}},
}
_ERROR_OBJECT = {
    "type": "object",
    "required": ["type", "message"],
    "properties": {
        "type": {"type": "string", "description": "A stable snake_case word to branch on"},
        "message": {"type": "string"},
        "invocationId": {"type": "string"},
    },
}
_MOMENT = {"type": ["string", "null"], "format": "date-time"}
_STATUS_DOCUMENT = {
    "type": "object",
    "description": "Where an async invocation stands (GET /invocations/{id}, the 202, the callback's data).",
    "required": ["invocationId", "agent", "status", "createdAt", "links"],
    "properties": {
        "invocationId": {"type": "string"},
        "agent": {"type": "string", "description": "namespace/name"},
        "status": {"enum": [str(status) for status in Status]},
        "createdAt": {"type": "string", "format": "date-time"},
        "startedAt": _MOMENT,
        "finishedAt": _MOMENT,
        "expiresAt": {**_MOMENT, "description": "When the run and its result may be dropped (set when it ends)"},
        "timeoutSeconds": {"type": "number"},
        "httpStatus": {"type": ["integer", "null"], "description": "The status a synchronous call would have had"},
        "exitCode": {"type": ["integer", "null"]},
        "contentType": {"type": ["string", "null"]},
        "error": {"oneOf": [{"$ref": "#/components/schemas/ErrorObject"}, {"type": "null"}]},
        "usage": {
            "oneOf": [
                {
                    "type": "object",
                    "description": "Model tokens the egress gateway counted",
                    "properties": {
                        name: {"type": "integer", "minimum": 0}
                        for name in (
                            "inputTokens",
                            "outputTokens",
                            "cacheCreationInputTokens",
                            "cacheReadInputTokens",
                            "modelCalls",
                        )
                    },
                },
                {"type": "null"},
            ]
        },
        "attempts": {"type": "integer", "minimum": 0, "description": "Times it was started (>1: it ran again)"},
        "callback": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["url", "state", "attempts"],
                    "properties": {
                        "url": {"type": "string", "format": "uri"},
                        "state": {"enum": ["pending", "delivered", "failed"]},
                        "attempts": {"type": "integer", "minimum": 0},
                        "lastStatus": {"type": ["integer", "null"]},
                        "lastError": {"type": ["string", "null"]},
                        "deliveredAt": _MOMENT,
                    },
                },
                {"type": "null"},
            ]
        },
        "links": {
            "type": "object",
            "properties": {name: {"type": "string"} for name in ("self", "result", "events")},
        },
    },
}
_OUTCOME = {
    "type": "object",
    "description": "The last event of a stream: what a buffered call would have answered.",
    "required": ["invocationId", "status"],
    "properties": {
        "invocationId": {"type": "string"},
        "status": {"type": "integer", "description": "200; 502 failed agent or output cap; 504 deadline; …"},
        "exitCode": {"type": ["integer", "null"]},
        "contentType": {"type": "string"},
        "error": {"$ref": "#/components/schemas/ErrorObject"},
        "body": {
            "type": "string",
            "contentEncoding": "base64",
            "description": f"The exact buffered answer, when the request sent {OUTCOME_BODY_HEADER}: base64",
        },
    },
}
_EVENTS = (
    "Server-Sent Events: a comment at once (`: clrk <invocation id>`), then `event: output` per line of "
    f"the agent's stdout as it writes it (`data` is the line's text; a line over {LINE_LIMIT} bytes goes "
    f"in pieces), a `: keep-alive` comment after {HEARTBEAT_S:g}s of silence, and last, always, "
    "`event: outcome` whose data is the Outcome (JSON). Events are numbered (`id`). Stderr never travels."
)
_EVENT_STREAM = {"text/event-stream": {"schema": {"type": "string"}}}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        answer["headers"] = headers
    return answer


def _header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or {"type": "string"}}


_INVOCATION_ID = {"X-Clrk-Invocation-Id": _header("The invocation's id (minted by clrk)")}
_RETRY = {"Retry-After": _header("Seconds to wait before retrying", {"type": "integer"})}
_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}, "description": "Invocation id"}]
_UNKNOWN = _error("No such invocation, or another caller's (unknown_invocation: one answer for both)")
_UNAUTHENTICATED = _error("No valid bearer key (unauthenticated)")


def _invocation_paths() -> dict[str, Any]:
    status = {"application/json": {"schema": {"$ref": "#/components/schemas/StatusDocument"}}}
    return {
        "/invocations/{id}": {
            "parameters": _ID,
            "get": {
                "summary": "An async invocation's status",
                "description": "With the Caller key that started it (another caller's id is a 404).",
                "responses": {
                    "200": {"description": "The status document", "content": status},
                    "401": _UNAUTHENTICATED,
                    "404": _UNKNOWN,
                },
            },
            "delete": {
                "summary": "Cancel an async invocation",
                "description": "Kills the sandbox's whole process tree; the run ends `cancelled` and its "
                "callback (if any) is sent.",
                "responses": {
                    "200": {"description": "Cancelled: the status document", "content": status},
                    "401": _UNAUTHENTICATED,
                    "404": _UNKNOWN,
                    "409": _error("The run ended before it could be cancelled (already_finished)"),
                },
            },
        },
        "/invocations/{id}/result": {
            "parameters": _ID,
            "get": {
                "summary": "An async invocation's answer",
                "description": "The body, Content-Type and status the synchronous call would have answered "
                "(a failed run's 502 error included), with X-Clrk-Invocation-Status.",
                "responses": {
                    "200": {
                        "description": "The agent's stdout (exit 0)",
                        "headers": {"X-Clrk-Invocation-Status": _header("The run's final state")},
                    },
                    "401": _UNAUTHENTICATED,
                    "404": _error("Unknown invocation (unknown_invocation), or not finished yet (result_not_ready)"),
                    "409": _error("The run was cancelled: it has no result (invocation_cancelled)"),
                    "410": _error("The result is no longer kept (result_expired)"),
                    "502": _error("The agent failed or its output was too large (the run's answer)"),
                    "504": _error("The agent's deadline passed (the run's answer)"),
                },
            },
        },
        "/invocations/{id}/events": {
            "parameters": _ID,
            "get": {
                "summary": "Follow an async invocation",
                "description": "`event: status` (the status document) first and at each change, each "
                "`output` line from the first (or after Last-Event-ID), then the `outcome`. " + _EVENTS,
                "parameters": [
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 0},
                        "description": "Resume after this event",
                    },
                    {
                        "name": OUTCOME_BODY_HEADER,
                        "in": "header",
                        "required": False,
                        "schema": {"enum": ["base64"]},
                        "description": "Put the exact answer in the outcome's `body` (base64)",
                    },
                ],
                "responses": {
                    "200": {"description": "The run's events", "content": _EVENT_STREAM},
                    "401": _UNAUTHENTICATED,
                    "404": _UNKNOWN,
                },
            },
        },
    }


def _webhooks() -> dict[str, Any]:
    signature_headers = [
        {"name": "webhook-id", "in": "header", "required": True, "schema": {"type": "string"},
         "description": "The invocation id: the same at every try (deduplicate by it)"},
        {"name": "webhook-timestamp", "in": "header", "required": True, "schema": {"type": "integer"},
         "description": "Unix seconds of this try"},
        {"name": "webhook-signature", "in": "header", "required": True, "schema": {"type": "string"},
         "description": "`v1,<base64 HMAC-SHA256>` of `<webhook-id>.<webhook-timestamp>.<body>` (Standard "
         "Webhooks), keyed with the agent namespace's callback secret"},
    ]  # fmt: skip
    event = {
        "type": "object",
        "description": "A structured CloudEvent 1.0",
        "required": ["specversion", "type", "source", "id", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "type": {"const": "dev.clrk.invocation.finished"},
            "source": {"type": "string"},
            "id": {"type": "string", "description": "The invocation id"},
            "subject": {"type": "string"},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"const": "application/json"},
            "clrkinvocationid": {"type": "string"},
            "data": {
                "allOf": [{"$ref": "#/components/schemas/StatusDocument"}],
                "properties": {
                    "result": {
                        "oneOf": [
                            {
                                "type": "object",
                                "required": ["contentType"],
                                "properties": {
                                    "contentType": {"type": "string"},
                                    "body": {"type": "string", "description": "The answer, when UTF-8"},
                                    "bodyBase64": {"type": "string", "contentEncoding": "base64"},
                                },
                            },
                            {"type": "null"},
                        ]
                    }
                },
            },
        },
    }
    return {
        "invocationFinished": {
            "post": {
                "summary": "An async invocation ended",
                "description": f"Sent once a run ends to {CALLBACK_HEADER} (or the TaskAgent's spec.callback.url): "
                "a 2xx answer is delivery; 410 stops; anything else is tried again with backoff.",
                "parameters": signature_headers,
                "requestBody": {"required": True, "content": {"application/cloudevents+json": {"schema": event}}},
                "responses": {
                    "2XX": {"description": "Delivered"},
                    "410": {"description": "The receiver is gone: no more tries"},
                },
            }
        }
    }


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "clrk ingress", "version": version("clrk")},
        "paths": {
            "/": {
                "post": {
                    "summary": "Invoke an agent",
                    "description": "The body (JSON) becomes the CloudEvent's data on the agent's "
                    "stdin; a CloudEvent in binary or structured mode passes through, keeping its "
                    "id. The invocation id is minted by clrk (X-Clrk-Invocation-Id on every answer). "
                    "The answer is the agent's stdout: buffered; as events with `Accept: "
                    "text/event-stream`; or later, with `Prefer: respond-async` (202, then "
                    "/invocations/{id}). A synchronous call is cut at "
                    f"{MAX_SYNC_TIMEOUT_S:g}s whatever the agent's spec.timeout; an async one runs up "
                    f"to spec.timeout (at most {MAX_ASYNC_TIMEOUT_S:g}s).",
                    "parameters": [
                        {
                            "name": "X-Clrk-TaskAgent",
                            "in": "header",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^[a-z0-9-]+/[a-z0-9-]+$"},
                            "description": "namespace/name of the TaskAgent",
                        },
                        {
                            "name": "X-Clrk-Timeout-Ms",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1},
                            "description": "A shorter deadline than the agent's spec.timeout",
                        },
                        {
                            "name": "Accept",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                            "description": "`text/event-stream`: the answer as Server-Sent Events, each "
                            "stdout line as the agent writes it, ending with an `outcome` event",
                        },
                        {
                            "name": "Prefer",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                            "description": "`respond-async` (RFC 7240): answer 202 at once and run the "
                            "invocation in the background",
                        },
                        {
                            "name": CALLBACK_HEADER,
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "format": "uri"},
                            "description": "With `Prefer: respond-async`: where the signed CloudEvent goes "
                            "when the run ends (see webhooks.invocationFinished); default: the "
                            "TaskAgent's spec.callback.url",
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {}}},
                    },
                    "responses": {
                        "200": {
                            "description": "The agent's stdout (exit 0); with `Accept: text/event-stream`, "
                            "its events, whatever the outcome. " + _EVENTS,
                            "headers": _INVOCATION_ID,
                            "content": {"*/*": {"schema": {}}, **_EVENT_STREAM},
                        },
                        "202": {
                            "description": "With `Prefer: respond-async`: accepted; follow it at Location",
                            "headers": {
                                "Location": _header("/invocations/{id}"),
                                "Preference-Applied": _header("respond-async"),
                                **_INVOCATION_ID,
                            },
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/StatusDocument"}}
                            },
                        },
                        "400": _error(
                            "Missing or malformed header, a header that must be single sent twice "
                            "(repeated_header), invalid JSON or CloudEvent, a callback URL clrk may not "
                            "call (invalid_callback_url)"
                        ),
                        "401": _error("No valid bearer key"),
                        "403": _error("The key may not call this agent"),
                        "404": _error("Unknown agent"),
                        "408": _error("The body did not finish arriving within the body timeout"),
                        "413": _error("Body too large"),
                        "502": _error("The agent failed or its output was too large"),
                        "503": _error("No capacity, or the agent cannot be reached; retry after Retry-After", _RETRY),
                        "504": _error("The agent's deadline passed"),
                    },
                }
            },
            **_invocation_paths(),
            "/_clrk/schedules/{namespace}/{agent}/{token}": {
                "post": {
                    "summary": "Run a TaskSchedule's agent (what its PingSource posts)",
                    "description": "The URL of a TaskSchedule's PingSource sink, written by clrk apply "
                    "and the operator: the token is made from the platform key for that agent alone and "
                    "is the only credential (no Caller key). The body is the PingSource's binary "
                    "CloudEvent; the rest is as POST /.",
                    "parameters": [
                        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                        for name in ("namespace", "agent", "token")
                    ],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {}}}},
                    "responses": {
                        "200": {"description": "The agent's stdout (exit 0)"},
                        "400": _error("Invalid JSON or CloudEvent, or a malformed header"),
                        "404": _error("Wrong token, or no such agent (one answer for both)"),
                        "408": _error("The body did not finish arriving within the body timeout"),
                        "413": _error("Body too large"),
                        "502": _error("The agent failed or its output was too large"),
                        "503": _error("No capacity; retry after Retry-After seconds"),
                        "504": _error("The agent's deadline passed"),
                    },
                }
            },
        },
        "webhooks": _webhooks(),
        "components": {
            "schemas": {
                "Error": _ERROR,
                "ErrorObject": _ERROR_OBJECT,
                "StatusDocument": _STATUS_DOCUMENT,
                "Outcome": _OUTCOME,
            }
        },
    }
