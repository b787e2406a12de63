"""Shared fixtures for the reliability suite (their helpers live in ``tests/support/bad_input.py``
and ``tests/support/faults.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.bad_input import BadInputIngress, bad_input_ingress_with


@pytest.fixture(scope="module")
def bad_input_ingress() -> Iterator[BadInputIngress]:
    """``bad_input_ingress_with("auto")`` for the whole module."""
    with bad_input_ingress_with() as ingress:
        yield ingress
