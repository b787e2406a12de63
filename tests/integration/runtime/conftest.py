"""Fixtures for the shim's integration tests (helpers: tests/support/runtime.py)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def shim_root() -> Iterator[Path]:
    """A temp root the sandbox uid can traverse (pytest's tmp_path is 0700 root)."""
    root = Path(tempfile.mkdtemp(prefix="clrk-test-"))
    root.chmod(0o711)
    yield root
    leftovers = list(root.iterdir())
    shutil.rmtree(root, ignore_errors=True)
    assert leftovers == [], f"the shim left files behind: {leftovers}"
