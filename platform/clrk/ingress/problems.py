"""The ingress's error answers: the platform's one JSON error body, naming what is wrong.

The body is :func:`clrk_runtime.protocol.errors.error_document`'s; this module only turns a
:class:`Problem` raised anywhere in the ingress into a Starlette response.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse

from clrk_runtime.protocol.errors import error_document
from clrk_runtime.protocol.headers import INVOCATION_HEADER

__all__ = ["Problem", "problem_response"]


class Problem(Exception):
    """A request the ingress answers with an error status and a JSON body."""

    def __init__(self, status: int, type_: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.headers = dict(headers or {})


def problem_response(problem: Problem, invocation_id: str | None = None) -> JSONResponse:
    headers = dict(problem.headers)
    if invocation_id:
        headers[INVOCATION_HEADER] = invocation_id
    body = error_document(problem.type, problem.message, invocation_id)
    return JSONResponse(body, status_code=problem.status, headers=headers)
