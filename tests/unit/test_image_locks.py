"""The hash-pinned requirement files the images install from (hack/lock-images.py writes them)
still cover what the pyproject.toml files ask for: a dependency added without re-running the
script fails here, before an image build does."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
LOCAL = {"clrk", "clrk-runtime"}
LOCKS = {
    "runtime/build-requirements.txt": [],
    "runtime/image-requirements.txt": ["runtime/pyproject.toml"],
    "platform/image-requirements.txt": ["pyproject.toml", "runtime/pyproject.toml"],
}
_ENTRY = re.compile(
    r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+) \\\n(?P<hashes>(?:    --hash=sha256:[0-9a-f]{64}.*\n)+)", re.M
)


def pins(path: str) -> dict[str, tuple[Version, int]]:
    """``{name: (version, number of hashes)}``; fails on any line that is not a pinned entry."""
    text = (REPO / path).read_text()
    entries = {
        canonicalize_name(m["name"]): (Version(m["version"]), m["hashes"].count("--hash="))
        for m in _ENTRY.finditer(text)
    }
    rest = _ENTRY.sub("", text)
    assert all(line.startswith("#") for line in rest.splitlines() if line.strip()), f"{path}: unpinned lines"
    return entries


def asked(pyprojects: list[str]) -> list[Requirement]:
    if not pyprojects:
        return [
            Requirement(r) for r in tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
        ]
    out = []
    for path in pyprojects:
        for spec in tomllib.loads((REPO / path).read_text())["project"]["dependencies"]:
            requirement = Requirement(spec)
            if canonicalize_name(requirement.name) not in LOCAL:
                out.append(requirement)
    return out


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_dependency_is_pinned_with_a_hash(lock: str) -> None:
    pinned = pins(lock)
    for requirement in asked(LOCKS[lock]):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{lock} lacks {requirement}: run hack/lock-images.py"
        version, hashes = pinned[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock}: {name}=={version} is not {requirement}"
        )
        assert 1 <= hashes <= 2, f"{lock}: {name} has {hashes} hashes (one per architecture, or one shared)"


def test_the_runtime_image_gets_what_the_platform_images_get() -> None:
    """The shim's dependencies at the same versions in the runtime image and in clrk's."""
    runtime, platform = pins("runtime/image-requirements.txt"), pins("platform/image-requirements.txt")
    assert {n: v for n, (v, _) in runtime.items()} == {n: platform[n][0] for n in runtime}
