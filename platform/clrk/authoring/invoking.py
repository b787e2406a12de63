"""``clrk invoke``: one request to an agent through the ingress, like Knative's ``func invoke``.

Pure: :func:`agent_ref`, :func:`parse_data`, :func:`parse_header`, :func:`mode_headers`,
:func:`post_headers`, :func:`error_line`, :func:`token_usage` and :func:`summary`. The I/O edge is
:func:`send` (the request) and :func:`fetch_usage` (the token counts a running ``clrk dev``
recorded for the invocation). ``--follow`` reads the answer as events (:mod:`.following`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from clrk.api.common import DNS_LABEL_RULE, is_dns_label
from clrk.errors import ClrkError
from clrk_runtime.protocol.headers import AGENT_HEADER, INVOCATION_HEADER
from clrk_runtime.protocol.invocations import ASYNC_PREFERENCE, CALLBACK_HEADER
from clrk_runtime.protocol.routes import TRACES_PATH
from clrk_runtime.protocol.streams import EVENT_STREAM

__all__ = [
    "AGENT_HEADER",
    "DEFAULT_URL",
    "INVOCATION_HEADER",
    "TRACES_PATH",
    "InvocationError",
    "InvocationRequest",
    "InvocationResult",
    "InvokeUsageError",
    "TokenUsage",
    "agent_ref",
    "auth_headers",
    "error_line",
    "exchange",
    "fetch_usage",
    "is_error_body",
    "load_data",
    "mode_headers",
    "parse_data",
    "parse_header",
    "post_headers",
    "send",
    "summary",
    "token_usage",
]

DEFAULT_URL = "http://127.0.0.1:18080"
_USAGE_KEYS = {"gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"}
TIMEOUT = httpx.Timeout(630.0, connect=10.0)
"""Long enough for the longest agent deadline (600 s) and the ingress's grace."""


class InvokeUsageError(ClrkError):
    """An option of ``clrk invoke`` is wrong (``option`` names it); nothing was sent."""

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        self.message = message
        super().__init__(f"{option}: {message}")


class InvocationError(ClrkError):
    """The agent answered, but not with a 2xx; ``str()`` is the line the CLI prints."""


@dataclass(frozen=True, slots=True)
class InvocationRequest:
    url: str
    agent: str
    """``namespace/name``."""
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    """Extra headers (``--header``); they may replace the defaults, not the agent header."""


@dataclass(frozen=True, slots=True)
class InvocationResult:
    status: int
    reason: str
    body: bytes
    headers: dict[str, str]
    """Names lower-cased."""
    duration: float
    """Seconds from sending the request to reading the whole answer."""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def invocation_id(self) -> str | None:
        return self.headers.get(INVOCATION_HEADER.lower())


@dataclass(frozen=True, slots=True)
class TokenUsage:
    input_tokens: int
    output_tokens: int
    model_calls: int


def agent_ref(name: str, namespace: str = "default") -> str:
    """``namespace/name`` for ``NAME`` or ``NS/NAME`` (which wins over ``namespace``)."""
    given_namespace, slash, given_name = name.rpartition("/")
    if slash:
        namespace, name = given_namespace, given_name
    for what, value in (("namespace", namespace), ("name", name)):
        if not is_dns_label(value):
            raise InvokeUsageError("NAME" if what == "name" else "--namespace", f"{value!r}: expected {DNS_LABEL_RULE}")
    return f"{namespace}/{name}"


def parse_data(data: bytes, source: str) -> bytes:
    """``data`` unchanged if it is JSON; :class:`InvokeUsageError` naming ``source`` if not."""
    try:
        json.loads(data)
    except UnicodeDecodeError:
        raise InvokeUsageError("--data", f"{source}: not JSON: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        shown = data[:60].decode("utf-8", "replace") + ("…" if len(data) > 60 else "")
        raise InvokeUsageError(
            "--data", f"{source}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): {shown!r}"
        ) from None
    return data


def load_data(spec: str, stdin: IO[bytes]) -> bytes:
    """The body ``--data`` asks for: JSON text, ``@FILE`` or ``-`` (stdin); it must be JSON."""
    if spec == "-":
        return parse_data(stdin.read(), "stdin")
    if spec.startswith("@"):
        path = Path(spec[1:])
        try:
            return parse_data(path.read_bytes(), str(path))
        except OSError as exc:
            raise InvokeUsageError("--data", f"{path}: cannot read: {exc.strerror}") from None
    return parse_data(spec.encode("utf-8"), "the value given")


def parse_header(text: str) -> tuple[str, str]:
    """``("Name", "value")`` from ``Name: value`` (or ``Name:value``)."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c.isspace() for c in name):
        raise InvokeUsageError("--header", f"expected NAME:VALUE, found {text!r}")
    if name.lower() == AGENT_HEADER.lower():
        raise InvokeUsageError("--header", f"{AGENT_HEADER} comes from NAME and --namespace")
    return name, value.strip()


def mode_headers(
    *, follow: bool = False, respond_async: bool = False, callback_url: str | None = None
) -> dict[str, str]:
    """The headers asking for the answer as events (``--follow``: ``Accept: text/event-stream``)
    or later (``--async``: ``Prefer: respond-async``, and ``X-Clrk-Callback-Url``). An async
    request itself is answered at once; its events are followed afterwards, on their own route."""
    if callback_url is not None:
        if not respond_async:
            raise InvokeUsageError("--callback-url", "only an async invocation calls back: add --async")
        scheme, sep, rest = callback_url.partition("://")
        if not sep or scheme.lower() not in ("http", "https") or not rest or any(c.isspace() for c in callback_url):
            raise InvokeUsageError("--callback-url", f"expected an http:// or https:// URL, found {callback_url!r}")
    if respond_async:
        headers = {"Prefer": ASYNC_PREFERENCE}
        return headers | ({CALLBACK_HEADER: callback_url} if callback_url is not None else {})
    return {"Accept": EVENT_STREAM} if follow else {}


def post_headers(request: InvocationRequest) -> dict[str, str]:
    """The headers of the request: the defaults, then the request's own, then the agent's."""
    headers = {"Content-Type": "application/json", "Accept": "application/json, */*"}
    headers.update(request.headers)
    headers[AGENT_HEADER] = request.agent
    return headers


def error_line(result: InvocationResult) -> str:
    """What to tell the user about a non-2xx answer: ``<type>: <message> (invocation <id>)`` for
    clrk's JSON errors, else the HTTP status (no id part when the answer carries none)."""
    invocation = result.invocation_id
    try:
        error = json.loads(result.body)["error"]
        line = f"{error['type']}: {error['message']}"
        invocation = error.get("invocationId") or invocation
    except (ValueError, KeyError, TypeError):
        line = f"HTTP {result.status} {result.reason}".rstrip()
    return f"{line} (invocation {invocation})" if invocation else line


def is_error_body(body: bytes) -> bool:
    """Whether ``body`` is clrk's JSON error shape (then it need not be printed as well)."""
    try:
        error = json.loads(body)["error"]
        return isinstance(error["type"], str) and isinstance(error["message"], str)
    except (ValueError, KeyError, TypeError):
        return False


def token_usage(spans: Sequence[Mapping[str, Any]]) -> TokenUsage | None:
    """Token totals over the model-call spans of one invocation; None when there are none."""
    attributes = [span.get("attributes") for span in spans if isinstance(span, Mapping)]
    calls = [a for a in attributes if isinstance(a, Mapping) and _USAGE_KEYS & a.keys()]
    if not calls:
        return None
    return TokenUsage(
        input_tokens=sum(int(a.get("gen_ai.usage.input_tokens") or 0) for a in calls),
        output_tokens=sum(int(a.get("gen_ai.usage.output_tokens") or 0) for a in calls),
        model_calls=len(calls),
    )


def summary(result: InvocationResult, usage: TokenUsage | None) -> list[str]:
    """The ``--verbose`` lines: invocation id, status, duration, tokens."""
    tokens = "unknown"
    if usage is not None:
        calls = "call" if usage.model_calls == 1 else "calls"
        tokens = f"{usage.input_tokens} in, {usage.output_tokens} out ({usage.model_calls} model {calls})"
    return [
        f"invocation: {result.invocation_id or 'unknown'}",
        f"status: {result.status} {result.reason}".rstrip(),
        f"duration: {result.duration:.3f}s",
        f"tokens: {tokens}",
    ]


def send(request: InvocationRequest, client: httpx.Client) -> InvocationResult:
    """POST the request; :class:`ClrkError` when nothing answers at the URL."""
    url = request.url.rstrip("/") + "/"
    return exchange(client, "POST", url, post_headers(request), request.body, TIMEOUT, shown=request.url)


def exchange(
    client: httpx.Client,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    timeout: httpx.Timeout,
    *,
    shown: str | None = None,
) -> InvocationResult:
    """One request and its whole answer; :class:`ClrkError` naming ``shown`` (default: ``url``)
    when nothing answers there."""
    started = time.monotonic()
    try:
        response = client.request(method, url, content=body, headers=dict(headers), timeout=timeout)
    except httpx.TimeoutException:
        raise ClrkError(f"{shown or url}: no answer within {timeout.read:g}s") from None
    except httpx.HTTPError as exc:
        raise ClrkError(
            f"{shown or url}: nothing answers there ({type(exc).__name__}); start one with `clrk dev` or pass --url"
        ) from None
    return InvocationResult(
        status=response.status_code,
        reason=response.reason_phrase,
        body=response.content,
        headers={k.lower(): v for k, v in response.headers.items()},
        duration=time.monotonic() - started,
    )


def auth_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The ``Authorization`` among ``headers`` (a Caller's key), to send again where the ingress
    asks for it (``/_clrk/traces``)."""
    return {name: value for name, value in headers.items() if name.lower() == "authorization"}


def fetch_usage(
    client: httpx.Client, url: str, invocation_id: str | None, headers: Mapping[str, str] | None = None
) -> TokenUsage | None:
    """Token use recorded by a running ``clrk dev`` for ``invocation_id``; None when unknown
    (no id, no clrk dev there, no model call recorded). ``headers``: the invocation's, whose
    ``Authorization`` (the Caller's key the spans are shown to) is sent along."""
    if not invocation_id:
        return None
    try:
        response = client.get(
            url.rstrip("/") + TRACES_PATH,
            params={"invocation": invocation_id},
            headers=auth_headers(headers or {}),
            timeout=5.0,
        )
        spans = response.json()["spans"] if response.status_code == 200 else []
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None
    return token_usage(spans) if isinstance(spans, list) else None
