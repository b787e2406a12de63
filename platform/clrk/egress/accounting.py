"""Accounting: read model, tokens and stop reason from Messages responses as they stream past.

An addon. For a model call (``POST /v1/messages`` by an identified agent) it asks the upstream
for an uncompressed body and makes the response streamed through a function that hands every
chunk on unchanged while feeding the incremental :class:`~clrk.egress.messages.SseUsageParser`
(or, for JSON, keeps a bounded copy to parse at the end): chunks reach the agent as they arrive.
At the end of the response (or on a transport error) the :class:`~clrk.egress.usage.ModelCall`
is complete and goes to the :class:`~clrk.egress.usage.UsageStore`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mitmproxy import http

from clrk.egress.identity import CLAIMS
from clrk.egress.messages import SseUsageParser, is_messages_call, parse_request, usage_from_json
from clrk.egress.usage import CALL, ModelCall, UsageStore

__all__ = ["Accounting"]

_JSON_LIMIT = 4 * 1024 * 1024


class _Tap:
    """The response's ``stream`` function: passes chunks through, parses on the side."""

    def __init__(self, call: ModelCall, sse: bool) -> None:
        self.call = call
        self._sse = SseUsageParser(call.usage) if sse else None
        self._copy = bytearray()

    def __call__(self, chunk: bytes) -> bytes:
        if self._sse is not None:
            self._sse.feed(chunk)
        elif len(self._copy) < _JSON_LIMIT:
            self._copy += chunk
        return chunk

    def close(self) -> None:
        if self._sse is not None:
            self._sse.close()
        elif self._copy:
            self.call.usage = usage_from_json(bytes(self._copy))
            self._copy.clear()


class Accounting:
    def __init__(self, store: UsageStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock

    def request(self, flow: http.HTTPFlow) -> None:
        claims = flow.metadata.get(CLAIMS)
        if claims is None or flow.response is not None:
            return
        if not is_messages_call(flow.request.method, flow.request.path):
            return
        flow.request.headers["accept-encoding"] = "identity"
        flow.metadata[CALL] = ModelCall(
            invocation_id=claims.invocation_id,
            agent=claims.agent,
            host=flow.request.pretty_host,
            request=parse_request(flow.request.raw_content or b""),
            started_at=self._clock(),
        )

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        call: ModelCall | None = flow.metadata.get(CALL)
        if call is None or flow.response is None or flow.response.raw_content is not None:
            return  # not a model call, or the gateway's own answer (parsed whole at the end)
        call.status = flow.response.status_code
        content_type = flow.response.headers.get("content-type", "")
        tap = _Tap(call, sse=content_type.startswith("text/event-stream"))
        flow.metadata["clrk.tap"] = tap
        flow.response.stream = tap

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow, "")

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow, flow.error.msg if flow.error else "error")

    def _finish(self, flow: http.HTTPFlow, error: str) -> None:
        call: ModelCall | None = flow.metadata.get(CALL)
        if call is None or call.finished_at is not None:
            return
        tap: _Tap | None = flow.metadata.pop("clrk.tap", None)
        if tap is not None:
            tap.close()
        elif flow.response is not None and flow.response.raw_content:
            call.usage = usage_from_json(flow.response.raw_content)
        if flow.response is not None:
            call.status = flow.response.status_code
        call.error = error or call.usage.error_type
        call.finished_at = self._clock()
        self.store.record(call)
