"""Reading manifests from disk or stdin into raw documents (the I/O edge of the manifests).

A path is a file, a folder (searched recursively for ``*.yaml``/``*.yml``, in sorted order) or
``-`` for stdin. Every document keeps where it came from, so each later error can name it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from clrk.errors import SpecError
from clrk.manifests.documents import YAMLError, load_all

__all__ = ["STDIN", "RawDocument", "load_documents"]

STDIN = "-"


@dataclass(frozen=True, slots=True)
class RawDocument:
    """One YAML document as written, before any validation."""

    source: str
    """The file it came from (as given, or ``<stdin>``), with the document number when the
    file holds several: ``manifests/all.yaml (document 2)``."""
    body: dict[str, Any]
    base_dir: Path = field(default_factory=Path.cwd)
    """Folder that relative paths in the document (``clrk.dev/build-context``) start from."""

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @property
    def api_version(self) -> str:
        return str(self.body.get("apiVersion", ""))


def _yaml_files(folder: Path) -> list[Path]:
    files = [p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()]
    return sorted(files)


def _parse(text: str, source: str, base_dir: Path) -> list[RawDocument]:
    try:
        bodies = load_all(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(source, "", f"invalid YAML: {where}{problem}") from None
    documents = []
    for number, body in enumerate(bodies, start=1):
        where = f"{source} (document {number})" if len(bodies) > 1 else source
        if not isinstance(body, dict):
            found = type(body).__name__
            raise SpecError(where, "", f"expected a Kubernetes object (a mapping), found a {found}")
        for key in ("apiVersion", "kind"):
            if not isinstance(body.get(key), str) or not body[key]:
                raise SpecError(where, key, "required: every document needs apiVersion and kind")
        documents.append(RawDocument(where, body, base_dir))
    return documents


def load_documents(paths: Iterable[str], stdin: IO[str] | None = None) -> list[RawDocument]:
    """Read every document under ``paths``. Raises :class:`SpecError` naming the file at fault."""
    documents: list[RawDocument] = []
    for given in paths:
        if given == STDIN:
            if stdin is None:
                raise SpecError("<stdin>", "", "no standard input to read manifests from")
            documents += _parse(stdin.read(), "<stdin>", Path.cwd())
            continue
        path = Path(given)
        if path.is_dir():
            files = _yaml_files(path)
            if not files:
                raise SpecError(given, "", "no *.yaml or *.yml files in this folder")
        elif path.is_file():
            files = [path]
        else:
            raise SpecError(given, "", "no such file or folder")
        for file in files:
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise SpecError(str(file), "", f"cannot read: {exc}") from None
            documents += _parse(text, str(file), file.parent)
    return documents
