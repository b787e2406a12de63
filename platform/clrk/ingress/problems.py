"""The ingress's error answers: always JSON, always naming what is wrong.

``{"error": {"type": "...", "message": "...", "invocationId": "..."}}``
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse

__all__ = ["INVOCATION_HEADER", "Problem", "problem_response"]

INVOCATION_HEADER = "X-Clrk-Invocation-Id"


class Problem(Exception):
    """A request the ingress answers with an error status and a JSON body."""

    def __init__(self, status: int, type_: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.headers = dict(headers or {})


def problem_response(problem: Problem, invocation_id: str | None = None) -> JSONResponse:
    error = {"type": problem.type, "message": problem.message}
    headers = dict(problem.headers)
    if invocation_id:
        error["invocationId"] = invocation_id
        headers[INVOCATION_HEADER] = invocation_id
    return JSONResponse({"error": error}, status_code=problem.status, headers=headers)
