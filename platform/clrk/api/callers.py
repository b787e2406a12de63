"""Caller: who may call which agents through the ingress, by bearer key.

The key itself is never written in a manifest: either its SHA-256 (``keySha256``, from
``clrk key`` or ``printf %s "$KEY" | sha256sum``) or a reference to a Secret holding it. Keys are
long random strings, so one unsalted SHA-256 is the right tool (as for API tokens), and the
ingress compares digests in constant time.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from clrk.api.common import Resource, Spec, is_dns_label
from clrk.api.policies import SecretKeyRef

__all__ = ["Caller", "CallerSpec"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class CallerSpec(Spec):
    key_sha256: str | None = Field(None, alias="keySha256")
    """Hex SHA-256 of the caller's bearer key."""
    key_secret_ref: SecretKeyRef | None = None
    """Or: the Secret key holding the bearer key itself."""
    agents: list[str] = Field(min_length=1)
    """TaskAgents this caller may invoke: ``name`` (same namespace), ``namespace/name``, or
    ``*`` for every agent."""

    @field_validator("key_sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256.match(value):
            raise ValueError("expected 64 lower-case hex digits (the SHA-256 of the key)")
        return value

    @field_validator("agents")
    @classmethod
    def _agent_refs(cls, refs: list[str]) -> list[str]:
        for ref in refs:
            if ref != "*" and not all(is_dns_label(part) for part in ref.split("/", 1)):
                raise ValueError(f"expected 'name', 'namespace/name' or '*', found {ref!r}")
        return refs

    @model_validator(mode="after")
    def _one_key(self) -> CallerSpec:
        if (self.key_sha256 is None) == (self.key_secret_ref is None):
            raise ValueError("set exactly one of keySha256 and keySecretRef")
        return self


class Caller(Resource):
    kind: Literal["Caller"] = "Caller"
    spec: CallerSpec

    def allowed_refs(self) -> list[str]:
        """Agents as ``namespace/name`` (or ``*``)."""
        namespace = self.metadata.namespace
        return [r if r == "*" or "/" in r else f"{namespace}/{r}" for r in self.spec.agents]
