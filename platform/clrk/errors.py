"""Errors clrk reports to its users.

The hierarchy, kept short on purpose::

    ClrkError                   anything clrk tells a user; the CLI prints it, no traceback
    ├── SpecError               a manifest is wrong: names the file, the document and the field path
    ├── BuildError              an image cannot be built or its build context read
    ├── ClusterError            the cluster is unreachable, lacks CRDs or Knative, or refused
    └── EgressPolicyError       the egress gateway's configuration cannot be honoured

Each error's ``str()`` is the one line the CLI prints after ``error:``.
"""

from __future__ import annotations

__all__ = ["BuildError", "ClrkError", "ClusterError", "EgressPolicyError", "SpecError"]


class ClrkError(Exception):
    """Base of every error clrk reports to a user."""


class SpecError(ClrkError):
    """A manifest is invalid.

    ``source`` is the file (or ``<stdin>``) and document index, ``field`` the dotted path inside
    the document (``spec.template.spec.env[0].valueFrom``), ``message`` what was expected and found.
    """

    def __init__(self, source: str, field: str, message: str) -> None:
        self.source = source
        self.field = field
        self.message = message
        super().__init__(f"{source}: {field}: {message}" if field else f"{source}: {message}")


class BuildError(ClrkError):
    """An image cannot be built, or a build context cannot be read."""


class ClusterError(ClrkError):
    """The cluster cannot be reached, lacks what clrk needs, or refused a change."""


class EgressPolicyError(ClrkError):
    """The egress gateway's configuration cannot be honoured (a secret missing, a bad upstream)."""
