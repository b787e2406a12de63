"""The ingress's OpenAPI document, served at ``/openapi.json``."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

__all__ = ["openapi_document"]

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "invocationId": {"type": "string"},
            },
        }
    },
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


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
                    "The answer is the agent's stdout.",
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
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {}}},
                    },
                    "responses": {
                        "200": {"description": "The agent's stdout (exit 0)"},
                        "400": _error(
                            "Missing or malformed header, a header that must be single sent twice "
                            "(repeated_header), invalid JSON or CloudEvent"
                        ),
                        "401": _error("No valid bearer key"),
                        "403": _error("The key may not call this agent"),
                        "404": _error("Unknown agent"),
                        "408": _error("The body did not finish arriving within the body timeout"),
                        "413": _error("Body too large"),
                        "502": _error("The agent failed or its output was too large"),
                        "503": _error("No capacity; retry after Retry-After seconds"),
                        "504": _error("The agent's deadline passed"),
                    },
                }
            },
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
    }
