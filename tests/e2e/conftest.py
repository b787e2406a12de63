"""The e2e tier: a real cluster with Knative (hack/kind-up.sh), driven like a user would.

Deselected by default (``-m 'not e2e'`` in pyproject); run with
``pytest -m e2e --with-e2e tests/e2e`` after ``hack/kind-up.sh``. ``--with-e2e`` is declared in
tests/conftest.py (``CLRK_E2E=1`` works too, for runs where that option is not declared).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

CONTEXT = os.environ.get("CLRK_E2E_CONTEXT", "kind-clrk")


def _enabled(config: pytest.Config) -> bool:
    try:
        return bool(config.getoption("--with-e2e"))
    except ValueError:
        return os.environ.get("CLRK_E2E") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _enabled(config):
        return
    skip = pytest.mark.skip(reason="e2e needs a cluster: hack/kind-up.sh, then pytest -m e2e --with-e2e tests/e2e")
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def context() -> str:
    """The kube context of the e2e cluster, checked to answer."""
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is not on PATH")
    probe = subprocess.run(["kubectl", "--context", CONTEXT, "get", "ns", "clrk"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(f"context {CONTEXT} has no clrk namespace ({probe.stderr.strip()}): run hack/kind-up.sh")
    return CONTEXT
