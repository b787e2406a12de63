"""The wire contract, in one place: what travels between caller, ingress, shim, agent and gateway.

Pure and small (the shim ships it into every agent image; the ingress, the egress gateway,
``clrk invoke`` and :mod:`clrk_runtime.testing` import it too). Nothing here does I/O, reads the
environment or keeps state.

============================  ==========================================================
:mod:`.headers`               the ``X-Clrk-*`` header names; a header sent twice is refused
:mod:`.routes`                paths the ingress serves besides ``POST /``
:mod:`.ids`                   invocation ids (minted UUIDv7, never a caller's), event ids
:mod:`.errors`                the one JSON error body, ``{"error": {"type", "message", …}}``
:mod:`.durations`             ``100s``/``1m30s`` durations, the longest timeout, RFC 3339 times
:mod:`.envelope`              the CloudEvent an agent reads on stdin, built from an HTTP request
:mod:`.tokens`                per-invocation proxy credentials the shim signs, the gateway checks
:mod:`.keys`                  per-namespace keys derived from the platform's one key
:mod:`.signing`               the ingress's signature on each request it forwards to a shim
:mod:`.streams`               streamed answers: stdout lines as Server-Sent Events, the outcome event
:mod:`.invocations`           async invocations: ``Prefer: respond-async``, their paths and states
============================  ==========================================================
"""

from clrk_runtime.protocol.durations import MAX_TIMEOUT_S, parse_duration, rfc3339
from clrk_runtime.protocol.envelope import INVOCATION_ATTRIBUTE, Envelope, EnvelopeError, build_envelope
from clrk_runtime.protocol.errors import error_body, error_document
from clrk_runtime.protocol.headers import (
    AGENT_HEADER,
    EXIT_CODE_HEADER,
    INVOCATION_HEADER,
    SIGNATURE_HEADER,
    TIMEOUT_HEADER,
    RepeatedHeader,
    request_headers,
)
from clrk_runtime.protocol.ids import EVENT_ID_RULE, is_event_id, is_invocation_id, new_invocation_id
from clrk_runtime.protocol.keys import KeyPurpose, namespace_key, namespace_of
from clrk_runtime.protocol.routes import TRACES_PATH
from clrk_runtime.protocol.signing import TOLERANCE_S, InvalidSignature, sign_request, verify_request
from clrk_runtime.protocol.tokens import InvalidToken, ProxyClaims, sign, verify

__all__ = [
    "AGENT_HEADER",
    "EVENT_ID_RULE",
    "EXIT_CODE_HEADER",
    "INVOCATION_ATTRIBUTE",
    "INVOCATION_HEADER",
    "MAX_TIMEOUT_S",
    "SIGNATURE_HEADER",
    "TIMEOUT_HEADER",
    "TOLERANCE_S",
    "TRACES_PATH",
    "Envelope",
    "EnvelopeError",
    "InvalidSignature",
    "InvalidToken",
    "KeyPurpose",
    "ProxyClaims",
    "RepeatedHeader",
    "build_envelope",
    "error_body",
    "error_document",
    "is_event_id",
    "is_invocation_id",
    "namespace_key",
    "namespace_of",
    "new_invocation_id",
    "parse_duration",
    "request_headers",
    "rfc3339",
    "sign",
    "sign_request",
    "verify",
    "verify_request",
]
