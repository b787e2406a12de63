"""CredentialInjectionPolicy: which secret goes into which header, for which host and agents."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from clrk.api.common import Resource, Spec, is_dns_label

__all__ = ["CredentialInjectionPolicy", "CredentialInjectionSpec", "SecretKeyRef"]


class SecretKeyRef(Spec):
    name: str = Field(min_length=1)
    key: str = Field(min_length=1)


class CredentialInjectionSpec(Spec):
    host: str = Field(min_length=1)
    """Exact host name, e.g. ``api.anthropic.com``; injection happens only over verified TLS."""
    header: str = "x-api-key"
    secret_key_ref: SecretKeyRef
    format: str = "{value}"
    """The header's value built from the secret: ``{value}`` or e.g. ``Bearer {value}``."""
    agents: list[str] = Field(default_factory=list)
    """Names of the TaskAgents (same namespace) it applies to; empty means all of them."""

    @field_validator("format")
    @classmethod
    def _has_placeholder(cls, value: str) -> str:
        if "{value}" not in value:
            raise ValueError(f"expected a string containing '{{value}}', found {value!r}")
        return value

    @field_validator("host")
    @classmethod
    def _plain_host(cls, value: str) -> str:
        if "/" in value or ":" in value or value != value.strip().lower():
            raise ValueError(f"expected a lower-case host name like 'api.anthropic.com', found {value!r}")
        return value

    @field_validator("agents")
    @classmethod
    def _agent_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not is_dns_label(name):
                raise ValueError(f"expected TaskAgent names, found {name!r}")
        return names


class CredentialInjectionPolicy(Resource):
    kind: Literal["CredentialInjectionPolicy"] = "CredentialInjectionPolicy"
    spec: CredentialInjectionSpec
