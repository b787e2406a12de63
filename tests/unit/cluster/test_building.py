"""`clrk build` orchestration, with python-on-whales' docker replaced by a recording fake."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from clrk.cluster import building
from clrk.cluster.hashing import context_tag
from clrk.errors import BuildError

REPO = Path(__file__).resolve().parents[3]
DIGEST = "sha256:" + "b" * 64


class FakeBuildx:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def build(self, context: Path, **kwargs: Any) -> None:
        self.calls.append({"context": context, **kwargs})
        Path(kwargs["metadata_file"]).write_text(json.dumps({"containerimage.digest": DIGEST}))


class FakeDocker:
    def __init__(self) -> None:
        self.buildx = FakeBuildx()

    def info(self) -> None:
        return None


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeDocker:
    docker = FakeDocker()
    monkeypatch.setattr(building, "docker", docker)
    return docker


def test_build_push_and_pin(tmp_path: Path, fake: FakeDocker) -> None:
    example = tmp_path / "jq-bot"
    shutil.copytree(REPO / "examples" / "jq-bot", example)
    lines: list[str] = []
    built = building.build_context(example, "registry.test/me", ["linux/amd64", "linux/arm64"], [example], lines.append)
    tag = context_tag(example, building.unpinned(example))
    assert built.image == f"registry.test/me/jq-bot:{tag}@{DIGEST}"
    (call,) = fake.buildx.calls
    assert call["platforms"] == ["linux/amd64", "linux/arm64"] and call["push"] is True
    assert call["tags"] == [f"registry.test/me/jq-bot:{tag}"]
    assert built.rewritten == [example / "manifests" / "taskagent.yaml"]
    assert f"image: {built.image}" in built.rewritten[0].read_text()
    assert context_tag(example, building.unpinned(example)) == tag, "pinning the manifests keeps the tag"
    (example / "agent.sh").write_text((example / "agent.sh").read_text() + "\n# changed\n")
    assert context_tag(example, building.unpinned(example)) != tag


def test_without_push_nothing_is_rewritten(tmp_path: Path, fake: FakeDocker) -> None:
    example = tmp_path / "jq-bot"
    shutil.copytree(REPO / "examples" / "jq-bot", example)
    built = building.build_context(example, None, ["linux/amd64"], [example], lambda _: None)
    assert "@" not in built.image and built.rewritten == []
    assert fake.buildx.calls[0]["push"] is False


def test_a_folder_without_dockerfile_fails_before_docker(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="no Dockerfile"):
        building.build_context(tmp_path, None, ["linux/amd64"], [], lambda _: None)
