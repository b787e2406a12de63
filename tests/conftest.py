"""Options shared by the whole suite."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--with-e2e", action="store_true", help="also run tests marked e2e (a kind cluster: hack/kind-up.sh)"
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--with-e2e"):
        config.option.markexpr = ""
