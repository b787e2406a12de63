"""The spawner's clean request (``Spawner.clean``) on trees laid out by the test: what it removes,
what it leaves, and that it says when it could not remove everything.

The "place" is a root-owned 1777 folder of the test's own, standing in for /tmp."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from clrk_runtime.launching.spawner import Spawner
from clrk_runtime.sandbox.places import shared_places
from clrk_runtime.sandbox.uids import HostIds
from tests.support.runtime import SANDBOX_UID, SANDBOX_UIDS

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: files of other uids")


@pytest.fixture
async def spawner() -> AsyncIterator[Spawner]:
    started = Spawner()
    await started.start()
    yield started
    await started.stop()


@pytest.fixture
def uids() -> Iterator[tuple[int, int]]:
    """Two sandbox uids no other shim of this host holds meanwhile."""
    ids = HostIds(SANDBOX_UID, SANDBOX_UIDS, Path("/dev/shm/clrk-sandbox-uids"))
    try:
        yield ids.take(), ids.take()
    finally:
        ids.close()


@pytest.fixture
def place() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="clrk-place-"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def sandbox(shim_root: Path) -> Path:
    """A sandbox's directory as the spawner makes it, in the 0711 root-owned temp root."""
    directory = shim_root / "sandbox"
    directory.mkdir(mode=0o700)
    return directory


def _own(path: Path, uid: int) -> None:
    os.lchown(path, uid, uid)


@ROOT_ONLY
async def test_what_the_uid_made_goes_and_nothing_else(
    spawner: Spawner, uids: tuple[int, int], place: Path, sandbox: Path, tmp_path: Path
) -> None:
    uid, other = uids
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("root's")
    # The uid's own: a file, a tree with a folder it made 000, links to root's things.
    (place / "tree/locked").mkdir(parents=True)
    (place / "tree/locked/file").write_text("x")
    (place / "file").write_text("x")
    (place / "link").symlink_to(victim)
    (place / "file-link").symlink_to(victim / "keep")
    for name in ("file", "tree", "tree/locked", "tree/locked/file", "link", "file-link"):
        _own(place / name, uid)
    (place / "tree/locked").chmod(0)
    # Others': another sandbox's, and root's.
    (place / "theirs").write_text("x")
    _own(place / "theirs", other)
    (place / "roots").write_text("x")
    # The sandbox's directory: a home swapped for a link to root's folder, a deep tree.
    _own(sandbox, uid)
    (sandbox / "home").symlink_to(victim)
    deep = sandbox / "work"
    for _ in range(50):
        deep /= "d"
    deep.mkdir(parents=True)
    (deep / "file").write_text("x")

    assert await spawner.clean(str(sandbox), uid, uid, [str(place)]) is True
    assert sorted(p.name for p in place.iterdir()) == ["roots", "theirs"]
    assert not sandbox.exists()
    assert sorted(p.name for p in victim.iterdir()) == ["keep"]


@ROOT_ONLY
async def test_a_leftover_it_cannot_remove_is_reported(
    spawner: Spawner, uids: tuple[int, int], place: Path, sandbox: Path
) -> None:
    """A folder of the uid's holding a non-empty folder of root's: the uid cannot empty it, so
    the clean says so (the uid must not be reused), and root's folder is untouched."""
    uid, _ = uids
    (place / "mine/roots").mkdir(parents=True)
    (place / "mine/roots/file").write_text("x")
    _own(place / "mine", uid)
    assert await spawner.clean(str(sandbox), uid, uid, [str(place)]) is False
    assert (place / "mine/roots/file").read_text() == "x"
    assert not sandbox.exists(), "the sandbox's own directory is removed all the same"


async def test_without_a_uid_only_the_directory_goes(spawner: Spawner, place: Path, sandbox: Path) -> None:
    """No uid of its own (the shim is not root): the shared places are the shim's own too."""
    (place / "shims").write_text("x")
    (sandbox / "many").mkdir()
    for n in range(200):  # more than the spawner removes itself: a cleaner process does it
        (sandbox / "many" / str(n)).write_text("x")
    assert await spawner.clean(str(sandbox), None, None, [str(place)]) is True
    assert not sandbox.exists()
    assert (place / "shims").exists()


async def test_a_tree_deeper_than_pythons_recursion_limit(spawner: Spawner, sandbox: Path) -> None:
    fd = os.open(sandbox, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(1500):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)
    assert await spawner.clean(str(sandbox), None, None, []) is True
    assert not sandbox.exists()


def test_the_shared_places_include_the_usual_ones_and_those_the_scan_finds() -> None:
    found = shared_places.__wrapped__()
    for usual in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(usual) and os.stat(usual).st_mode & 0o002 and os.stat(usual).st_uid == 0:
            assert usual in found
    assert all(os.stat(place).st_mode & 0o002 for place in found)
    extra = Path(tempfile.mkdtemp(prefix="clrk-place-"))  # /tmp/<it>: the second level
    try:
        extra.chmod(0o1777)
        if os.geteuid() == 0 and extra.stat().st_dev == os.stat("/").st_dev:
            assert str(extra) in shared_places.__wrapped__()
    finally:
        extra.rmdir()
