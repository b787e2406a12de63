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
                    "stdin; a CloudEvent in binary or structured mode passes through. The answer "
                    "is the agent's stdout.",
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
                        "400": _error("Missing or malformed header, invalid JSON or CloudEvent"),
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
            }
        },
    }
