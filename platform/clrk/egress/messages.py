"""The Anthropic Messages wire format, parsed: pure functions and an incremental SSE parser.

No I/O and no clock: the accounting addon feeds bytes in as they pass, and reads a
:class:`ModelUsage` out. Facts relied on, from Anthropic's API documentation (the pages
"Streaming Messages" and "Prompt caching"), each pinned by ``tests/unit/egress/test_messages.py``
and played by the fake upstream in ``tests/support/fake_anthropic.py``:

- ``message_start.message.usage`` carries input and cache tokens; ``message_delta.usage`` is
  cumulative (keep the last value of each field, never add);
- ``input_tokens`` excludes cache tokens: total input = input + cache_read + cache_creation;
- an ``event: error`` may arrive after HTTP 200.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ModelRequest",
    "ModelUsage",
    "SseUsageParser",
    "is_messages_call",
    "parse_request",
    "usage_from_json",
]

_USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


def is_messages_call(method: str, path: str) -> bool:
    """True for a model call: ``POST /v1/messages`` (any query), not ``count_tokens``.

    The path must be exactly that: on model hosts :mod:`clrk.egress.paths` refuses every other
    spelling before this is asked, so nothing the upstream routes to a model goes unaccounted.
    """
    return method == "POST" and path.partition("?")[0] == "/v1/messages"


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """What a Messages request asks for, as far as budgets and spans care."""

    model: str = ""
    max_tokens: int = 0
    stream: bool = False


def parse_request(body: bytes) -> ModelRequest:
    """Read model, max_tokens and stream from a request body; tolerant of anything malformed."""
    try:
        data = json.loads(body)
    except ValueError:
        return ModelRequest()
    if not isinstance(data, dict):
        return ModelRequest()
    max_tokens = data.get("max_tokens")
    return ModelRequest(
        model=str(data.get("model") or ""),
        max_tokens=max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else 0,
        stream=data.get("stream") is True,
    )


@dataclass(slots=True)
class ModelUsage:
    """Tokens and outcome of one model call, filled in as the response passes."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    model: str = ""
    response_id: str = ""
    stop_reason: str = ""
    error_type: str = ""
    """``error.type`` of an error body or of an ``event: error`` (``overloaded_error`` …)."""
    complete: bool = False
    """True once ``message_stop`` (SSE) or a whole JSON message was seen."""

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens

    def merge_usage(self, usage: Any) -> None:
        """Take each field present in ``usage`` (a cumulative snapshot: the last one wins)."""
        if not isinstance(usage, dict):
            return
        for name in _USAGE_FIELDS:
            value = usage.get(name)
            if isinstance(value, int):
                setattr(self, name, value)

    def apply_message(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        self.model = str(message.get("model") or self.model)
        self.response_id = str(message.get("id") or self.response_id)
        if message.get("stop_reason"):
            self.stop_reason = str(message["stop_reason"])
        self.merge_usage(message.get("usage"))

    def apply_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message_start":
            self.apply_message(event.get("message"))
        elif kind == "message_delta":
            delta = event.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason"):
                self.stop_reason = str(delta["stop_reason"])
            self.merge_usage(event.get("usage"))
        elif kind == "message_stop":
            self.complete = True
        elif kind == "error":
            error = event.get("error")
            self.error_type = str(error.get("type", "error")) if isinstance(error, dict) else "error"


def usage_from_json(body: bytes) -> ModelUsage:
    """Parse a whole (non-streamed) Messages response or error body."""
    usage = ModelUsage()
    try:
        data = json.loads(body)
    except ValueError:
        return usage
    if isinstance(data, dict):
        if data.get("type") == "error":
            usage.apply_event(data)
        else:
            usage.apply_message(data)
            usage.complete = data.get("type") == "message"
    return usage


@dataclass(slots=True)
class SseUsageParser:
    """Feed it bytes in any slicing; it applies each complete SSE event to :attr:`usage`.

    Only ``data:`` lines matter (the JSON carries its own ``type``); lines may end in LF or
    CRLF; an event ends at a blank line. Memory is bounded by the longest single event.
    """

    usage: ModelUsage = field(default_factory=ModelUsage)
    _buffer: bytearray = field(default_factory=bytearray)
    _data: list[bytes] = field(default_factory=list)

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        start = 0
        while (end := self._buffer.find(b"\n", start)) != -1:
            self._line(bytes(self._buffer[start:end]).rstrip(b"\r"))
            start = end + 1
        del self._buffer[:start]

    def close(self) -> ModelUsage:
        """End of stream: a last event without its blank line still counts."""
        if self._buffer:
            self._line(bytes(self._buffer).rstrip(b"\r"))
            self._buffer.clear()
        self._line(b"")
        return self.usage

    def _line(self, line: bytes) -> None:
        if not line:
            if self._data:
                self._dispatch(b"\n".join(self._data))
                self._data.clear()
        elif line.startswith(b"data:"):
            self._data.append(line[5:].removeprefix(b" "))

    def _dispatch(self, data: bytes) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            return
        if isinstance(event, dict):
            self.usage.apply_event(event)
