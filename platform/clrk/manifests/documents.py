"""YAML documents read and written as Kubernetes reads them: YAML 1.1 scalars, plain data.

One YAML library for all of clrk: ruamel.yaml, whose round-trip mode ``clrk build`` needs to
rewrite manifests with their comments kept (:mod:`clrk.cluster.rewriting`). Here it runs in safe
mode with YAML 1.1's rules for every document of a stream, which Kubernetes' own YAML reader
follows: ``yes``, ``on`` and ``n`` are booleans, ``0777`` is octal. Written out, a string that 1.1
would read as something else is quoted (``'yes'``, ``'0777'``), so what clrk renders means the same
to ``kubectl``.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError, YAMLWarning
from ruamel.yaml.resolver import VersionedResolver

__all__ = ["YAMLError", "dump_all", "load_all"]


class _Yaml11Resolver(VersionedResolver):
    """YAML 1.1's implicit types for every document (ruamel applies a ``version`` to the first
    document of a stream only, and writes a ``%YAML`` directive Kubernetes does not expect)."""

    @property
    def processing_version(self) -> Any:
        return (1, 1)


def _yaml() -> YAML:
    yaml = YAML(typ="safe", pure=True)
    yaml.Resolver = _Yaml11Resolver
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    yaml.allow_unicode = True
    yaml.width = 4096  # long lines (descriptions, commands) stay one line
    return yaml


def load_all(text: str) -> list[Any]:
    """Every document in ``text``, empty ones left out; :class:`YAMLError` when it is not YAML."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", YAMLWarning)  # "1e3 should have a dot in YAML 1.1"
        return [document for document in _yaml().load_all(text) if document is not None]


def dump_all(documents: Iterable[Any]) -> str:
    """``documents`` as one YAML stream, separated by ``---``."""
    out = io.StringIO()
    _yaml().dump_all(list(documents), out)
    return out.getvalue()
