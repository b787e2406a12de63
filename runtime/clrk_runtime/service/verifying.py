"""Which requests come from the clrk ingress: the only ones whose invocation id a shim believes.

A request names its invocation (``X-Clrk-Invocation-Id``) and its deadline (``X-Clrk-Timeout-Ms``);
the id becomes the agent's proxy credentials and the key of their revocation at the egress
gateway, so a shim takes it only from the ingress, which minted it:

* **with a request key** (``request_key_file``; in a cluster the agent namespace's ``request``
  key, see :mod:`clrk_runtime.protocol.keys`): the request must carry the ingress's
  ``X-Clrk-Signature`` over this agent, that id, that deadline and that body
  (:mod:`clrk_runtime.protocol.signing`); else 401 ``unsigned_request``, saying why (missing,
  malformed, stale, does not match). A signed request this shim already served within the
  signature's tolerance (the same signature: its time, id, deadline and body) is a replay: 409
  ``replayed_request``. The ingress itself may send one invocation again, signed anew (a fresh time
  and what is left of the deadline): after a 503 it waits and retries, and an async invocation whose
  first runner was lost runs again under its id. A captured request can only be sent as it was.
* **without one** (a shim run alone, ``docker run``, :mod:`clrk_runtime.testing`): the shim mints
  the id itself and ignores ``X-Clrk-Invocation-Id``.

Either way a well-formed ``X-Clrk-Timeout-Ms`` may shorten the deadline (never lengthen it: the
runtime takes the smaller of it and ``spec.timeout``), which gives nobody more than the manifest
does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from clrk_runtime.protocol.headers import INVOCATION_HEADER, SIGNATURE_HEADER, TIMEOUT_HEADER, decimal
from clrk_runtime.protocol.ids import is_invocation_id, new_invocation_id
from clrk_runtime.protocol.signing import TOLERANCE_S, InvalidSignature, verify_request

__all__ = ["Admission", "Refusal", "RequestVerifier", "read_request_key"]

_INVOCATION = INVOCATION_HEADER.lower()
_SIGNATURE = SIGNATURE_HEADER.lower()
_TIMEOUT = TIMEOUT_HEADER.lower()


@dataclass(frozen=True, slots=True)
class Admission:
    """What a shim may believe of one request."""

    invocation_id: str
    """The ingress's, from a signed request; else minted here."""
    timeout: float | None
    """Seconds ``X-Clrk-Timeout-Ms`` allows, when it is well-formed (the runtime applies it only
    when shorter than ``spec.timeout``)."""


class Refusal(Exception):
    """A request the shim does not run: ``status``, ``kind`` (the error body's ``type``) and a
    message for the caller."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


def read_request_key(path: Path | None) -> bytes | None:
    """The key in ``path`` (surrounding whitespace stripped), None without a path; ValueError
    naming the setting when the file cannot be read or is empty (a shim meant to check
    signatures must not silently stop)."""
    if path is None:
        return None
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise ValueError(f"request_key_file (CLRK_REQUEST_KEY_FILE): cannot read {path}: {exc.strerror}") from None
    if not key:
        raise ValueError(f"request_key_file (CLRK_REQUEST_KEY_FILE): {path} is empty")
    return key


def _timeout(headers: Mapping[str, str]) -> float | None:
    milliseconds = decimal(headers.get(_TIMEOUT, "").strip(), 15)
    return None if milliseconds is None else milliseconds / 1000


class RequestVerifier:
    """Admits or refuses requests for one agent's shim (``key`` None: no signature is asked)."""

    def __init__(
        self,
        key: bytes | None,
        agent: str,
        *,
        tolerance: float = TOLERANCE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key
        self._agent = agent
        self._tolerance = tolerance
        self._clock = clock
        self._served: dict[str, float] = {}
        """Signature → when a replay of it would be stale anyway (oldest first)."""

    @property
    def signed(self) -> bool:
        """Whether requests must carry the ingress's signature."""
        return self._key is not None

    def admit(self, headers: Mapping[str, str], body: bytes) -> Admission:
        """The request's :class:`Admission` (``headers`` with lower-cased names, ``body`` whole);
        raises :class:`Refusal`."""
        if self._key is None:
            return Admission(new_invocation_id(), _timeout(headers))
        now = self._clock()
        invocation_id = headers.get(_INVOCATION, "")
        try:
            verify_request(
                headers.get(_SIGNATURE),
                self._key,
                now=now,
                method="POST",
                agent=self._agent,
                invocation_id=invocation_id,
                timeout_ms=headers.get(_TIMEOUT, ""),
                content_type=headers.get("content-type", ""),
                body=body,
                tolerance=self._tolerance,
            )
        except InvalidSignature as exc:
            raise Refusal(401, "unsigned_request", f"{exc}; this agent is called through the clrk ingress") from None
        if not is_invocation_id(invocation_id):
            raise Refusal(400, "invalid_invocation_id", f"header {INVOCATION_HEADER}: not an id the ingress mints")
        self._forget(now)
        signature = headers.get(_SIGNATURE, "")
        if signature in self._served:
            raise Refusal(409, "replayed_request", f"this request for invocation {invocation_id} was already served")
        # A signature is good up to `tolerance` either side of its time: until then, remember.
        self._served[signature] = now + 2 * self._tolerance
        return Admission(invocation_id, _timeout(headers))

    def _forget(self, now: float) -> None:
        """Drop the signatures stale by now (inserted in order of expiry)."""
        while self._served:
            oldest = next(iter(self._served))
            if self._served[oldest] > now:
                return
            del self._served[oldest]
