"""Where secret values come from. Values are read only here and only handed to the injector.

Two sources behind one small interface, :class:`SecretSource`:

- :class:`StaticSecrets` — ``clrk dev`` / ``clrk egress``: ``--secret NAME=ENVVAR:KEY`` says that
  key ``KEY`` of secret ``NAME`` is the value of environment variable ``ENVVAR``; the CLI edge
  resolves the variables with :func:`secrets_from_specs` and fails clearly when one is unset.
- :class:`DirectorySecrets` — a cluster: a mounted Kubernetes Secret, ``<root>/<name>/<key>``.

Neither ever shows a value in its ``repr``; errors name the secret, never its value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from clrk.api.egress import SecretRef
from clrk.errors import EgressPolicyError

__all__ = [
    "DirectorySecrets",
    "SecretSource",
    "StaticSecrets",
    "parse_secret_spec",
    "secrets_from_specs",
]

_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)=(?P<env>[A-Za-z_][A-Za-z0-9_]*):(?P<key>[A-Za-z0-9._-]+)$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")


class SecretSource(Protocol):
    def get(self, ref: SecretRef) -> str | None:
        """The secret's value, or None when it does not exist."""
        ...


class StaticSecrets:
    """Values resolved once at start (embedded mode)."""

    def __init__(self, values: Mapping[tuple[str, str], str] | None = None) -> None:
        self._values = dict(values or {})

    def get(self, ref: SecretRef) -> str | None:
        return self._values.get((ref.name, ref.key))

    def values(self) -> list[str]:
        """Every value, for redaction filters and leak scans; never print them."""
        return list(self._values.values())

    def __repr__(self) -> str:
        keys = ", ".join(f"{n}/{k}" for n, k in sorted(self._values))
        return f"StaticSecrets({keys})"


class DirectorySecrets:
    """A mounted Kubernetes Secret per directory; files are re-read so rotations apply."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def get(self, ref: SecretRef) -> str | None:
        if not (_SEGMENT.match(ref.name) and _SEGMENT.match(ref.key)) or ref.name.startswith(".."):
            return None
        try:
            return (self._root / ref.name / ref.key).read_text().strip()
        except OSError:
            return None

    def __repr__(self) -> str:
        return f"DirectorySecrets({self._root})"


def parse_secret_spec(spec: str) -> tuple[str, str, str]:
    """``NAME=ENVVAR:KEY`` → ``(name, envvar, key)``."""
    match = _SPEC.match(spec.strip())
    if match is None:
        raise EgressPolicyError(f"--secret: expected NAME=ENVVAR:KEY, got {spec!r}")
    return match["name"], match["env"], match["key"]


def secrets_from_specs(specs: list[str], environ: Mapping[str, str]) -> StaticSecrets:
    """Resolve ``--secret`` options against ``environ`` (passed in: this runs at the edge)."""
    values: dict[tuple[str, str], str] = {}
    for spec in specs:
        name, env, key = parse_secret_spec(spec)
        value = environ.get(env)
        if not value:
            raise EgressPolicyError(
                f"--secret {name}={env}:{key}: environment variable {env} is not set; "
                f"export {env}=<the value> and run again"
            )
        values[(name, key)] = value
    return StaticSecrets(values)
