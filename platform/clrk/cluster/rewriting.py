"""Point TaskAgents at a freshly pushed image, keeping the manifest exactly as written otherwise.

ruamel.yaml's round-trip loader finds, in each document, a TaskAgent whose
``clrk.dev/build-context`` resolves to the built folder, and the line and column of its
``spec.template.spec.image`` value; only that scalar's text is replaced. Comments, quoting, key
order, indentation and blank lines stay byte for byte. Pure: text in, text out.
"""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from clrk.api.taskagent import ANNOTATION_BUILD_CONTEXT
from clrk.errors import SpecError

__all__ = ["rewrite_images"]

_SCALAR = re.compile(r"""'(?:[^']|'')*'|"(?:[^"\\]|\\.)*"|[^\s#][^#\n]*?(?=\s+#|\s*$)""")


def _targets(text: str, source: str, base_dir: Path, context: Path) -> list[tuple[int, int]]:
    yaml = YAML(typ="rt")
    try:
        documents = list(yaml.load_all(StringIO(text)))
    except YAMLError as exc:
        raise SpecError(source, "", f"invalid YAML: {exc}") from None
    out = []
    for doc in documents:
        if not isinstance(doc, dict) or doc.get("kind") != "TaskAgent":
            continue
        if not str(doc.get("apiVersion", "")).startswith("clrk.dev/"):
            continue
        relative = ((doc.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_BUILD_CONTEXT)
        if relative is None or (base_dir / str(relative)).resolve() != context.resolve():
            continue
        try:
            spec = doc["spec"]["template"]["spec"]
            line, column = spec.lc.value("image")
        except (KeyError, TypeError, AttributeError):
            raise SpecError(source, "spec.template.spec.image", "required, but missing") from None
        out.append((int(line), int(column)))
    return out


def rewrite_images(text: str, source: str, base_dir: Path, context: Path, image: str) -> str | None:
    """``text`` with the image of each TaskAgent built from ``context`` set to ``image``; None when
    no TaskAgent in it is built from there."""
    targets = _targets(text, source, base_dir, context)
    if not targets:
        return None
    lines = text.splitlines(keepends=True)
    for line, column in targets:
        original = lines[line]
        match = _SCALAR.match(original, column)
        if match is None:
            raise SpecError(source, "spec.template.spec.image", "expected a one-line scalar to rewrite")
        lines[line] = original[: match.start()] + image + original[match.end() :]
    return "".join(lines)
