"""``read_agent_file``: a file an agent controls is read only as a regular file of its own uid,
never through a symlink, never a FIFO, a directory or more than the cap."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clrk_runtime.sandbox.reading import RefusedFile, read_agent_file


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    (tmp_path / "meta").mkdir()
    return tmp_path


def _read(sandbox: Path, uid: int | None = None, cap: int = 64) -> bytes | None:
    return read_agent_file(str(sandbox), ("meta", "headers"), uid, cap)


def test_a_regular_file_is_read(sandbox: Path) -> None:
    (sandbox / "meta" / "headers").write_bytes(b"Status: 201\n")
    assert _read(sandbox, os.geteuid()) == b"Status: 201\n"


def test_nothing_there_is_nothing_declared(sandbox: Path) -> None:
    assert _read(sandbox) is None


def test_a_symlink_is_not_followed(sandbox: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    secret = tmp_path_factory.mktemp("secret") / "headers"
    secret.write_bytes(b"Status: 201\n")
    (sandbox / "meta" / "headers").symlink_to(secret)
    with pytest.raises(RefusedFile, match="a symlink"):
        _read(sandbox)


def test_meta_as_a_symlink_is_not_followed(sandbox: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "headers").write_bytes(b"Status: 201\n")
    (sandbox / "meta").rmdir()
    (sandbox / "meta").symlink_to(elsewhere)
    with pytest.raises(RefusedFile, match="a symlink"):
        _read(sandbox)


def test_a_fifo_is_refused_without_waiting_for_a_writer(sandbox: Path) -> None:
    os.mkfifo(sandbox / "meta" / "headers")
    with pytest.raises(RefusedFile, match="a FIFO"):
        _read(sandbox)


def test_a_directory_is_refused(sandbox: Path) -> None:
    (sandbox / "meta" / "headers").mkdir()
    with pytest.raises(RefusedFile, match="a directory"):
        _read(sandbox)


def test_a_file_over_the_cap_is_refused(sandbox: Path) -> None:
    with open(sandbox / "meta" / "headers", "wb") as file:
        file.write(b"Status: 201\n")
        file.truncate(1 << 30)  # sparse
    with pytest.raises(RefusedFile, match="over the 64"):
        _read(sandbox)


def test_a_file_of_another_uid_is_refused(sandbox: Path) -> None:
    (sandbox / "meta" / "headers").write_bytes(b"Status: 201\n")
    with pytest.raises(RefusedFile, match="owned by uid"):
        _read(sandbox, uid=os.geteuid() + 1)
