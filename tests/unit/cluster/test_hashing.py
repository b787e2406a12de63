"""Content tags: same files → same tag; paths, modes and contents count; .dockerignore honoured."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from clrk.cluster.hashing import Entry, content_digest, context_entries, context_tag, parse_dockerignore
from clrk.errors import BuildError


def make_context(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "Dockerfile").write_text("FROM scratch\nCOPY agent.sh /\n")
    (folder / "agent.sh").write_text("#!/bin/sh\ncat\n")
    (folder / "agent.sh").chmod(0o755)
    (folder / "lib").mkdir()
    (folder / "lib" / "a.txt").write_text("a")
    return folder


def test_order_of_entries_does_not_matter() -> None:
    a, b = Entry("a", 0o100644, b"1"), Entry("b", 0o100644, b"2")
    assert content_digest([a, b]) == content_digest([b, a])


@pytest.mark.parametrize(
    "changed",
    [Entry("a", 0o100755, b"1"), Entry("a", 0o100644, b"2"), Entry("c", 0o100644, b"1"), Entry("a", 0o120777, b"1")],
)
def test_path_mode_kind_and_content_each_count(changed: Entry) -> None:
    assert content_digest([Entry("a", 0o100644, b"1")]) != content_digest([changed])


def test_same_files_elsewhere_give_the_same_tag(tmp_path: Path) -> None:
    one = make_context(tmp_path / "one")
    two = tmp_path / "two"
    shutil.copytree(one, two)
    assert context_tag(one) == context_tag(two)
    assert len(context_tag(one)) == 16
    (two / "agent.sh").chmod(0o644)
    assert context_tag(one) != context_tag(two)


def test_dockerignore_excludes_and_reincludes(tmp_path: Path) -> None:
    folder = make_context(tmp_path / "ctx")
    before = context_tag(folder)
    (folder / ".dockerignore").write_text("# build junk\nnode_modules\n**/*.log\n!keep.log\n")
    with_ignore = context_tag(folder)
    (folder / "node_modules").mkdir()
    (folder / "node_modules" / "x.js").write_text("x")
    (folder / "lib" / "debug.log").write_text("noise")
    assert context_tag(folder) == with_ignore != before
    (folder / "keep.log").write_text("kept")
    paths = [e.path for e in context_entries(folder)]
    assert "keep.log" in paths and "lib/debug.log" not in paths and "node_modules/x.js" not in paths


def test_ignore_rules_last_match_wins() -> None:
    rules = parse_dockerignore("*.md\n!README.md\n/docs/\n")
    assert rules.ignored("CHANGES.md") and not rules.ignored("README.md")
    assert rules.ignored("docs/a/b.txt") and not rules.ignored("sub/CHANGES.txt")
    assert not rules.ignored("sub/CHANGES.md"), "'*' never crosses '/'"


def test_a_context_needs_a_dockerfile(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="no Dockerfile"):
        context_tag(tmp_path)
