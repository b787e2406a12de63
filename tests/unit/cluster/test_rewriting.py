"""`clrk build` pins TaskAgents to the pushed digest and changes nothing else in the file."""

from __future__ import annotations

import shutil
from pathlib import Path

from clrk.cluster.building import image_repository, rewrite_manifests
from clrk.cluster.rewriting import rewrite_images

REPO = Path(__file__).resolve().parents[3]
PINNED = "registry.test/jq-bot:0123456789abcdef@sha256:" + "a" * 64


def test_the_example_changes_on_the_image_line_only(tmp_path: Path) -> None:
    example = tmp_path / "jq-bot"
    shutil.copytree(REPO / "examples" / "jq-bot", example)
    before = (example / "manifests" / "taskagent.yaml").read_text()
    changed = rewrite_manifests([example], example, PINNED)
    assert changed == [example / "manifests" / "taskagent.yaml"]
    after = changed[0].read_text()
    diff = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert diff == [("      image: ghcr.io/clrk-dev/examples/jq-bot:0.1.0", f"      image: {PINNED}")]
    assert (example / "manifests" / "credentialinjectionpolicy.yaml").read_text() == (
        REPO / "examples" / "jq-bot" / "manifests" / "credentialinjectionpolicy.yaml"
    ).read_text()


DOCS = """\
# two agents, one built here
apiVersion: clrk.dev/v1alpha1
kind: TaskAgent
metadata:
  name: a
  annotations: {clrk.dev/build-context: ./ctx}
spec:
  template:
    spec:
      image: "old:1"   # quoted, with a comment
---
apiVersion: clrk.dev/v1alpha1
kind: TaskAgent
metadata:
  name: b
  annotations:
    clrk.dev/build-context: ../elsewhere
spec:
  template: {spec: {image: other:1}}
"""


def test_only_agents_built_from_the_context_change(tmp_path: Path) -> None:
    out = rewrite_images(DOCS, "m.yaml", tmp_path, tmp_path / "ctx", "new@sha256:1")
    assert out == DOCS.replace('"old:1"', "new@sha256:1")


def test_files_without_such_agents_are_left_alone(tmp_path: Path) -> None:
    assert rewrite_images(DOCS, "m.yaml", tmp_path, tmp_path / "nowhere", "x") is None
    assert rewrite_images("apiVersion: v1\nkind: ConfigMap\n", "m.yaml", tmp_path, tmp_path, "x") is None


def test_repository_name_comes_from_the_context_folder(tmp_path: Path) -> None:
    assert image_repository("ghcr.io/me/", tmp_path / "My Bot") == "ghcr.io/me/my-bot"
