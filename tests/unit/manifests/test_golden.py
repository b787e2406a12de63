"""The compiler's output for representative manifests, pinned as golden files.

Regenerate after an intended change with ``CLRK_UPDATE_GOLDEN=1 pytest tests/unit/manifests``
and review the diff like code.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clrk.cli.manifests import dump_yaml
from clrk.manifests import compile_bundle, load_bundle

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "input.yaml").exists())


@pytest.mark.parametrize("case", CASES)
def test_compiled_output_matches_golden(case: str) -> None:
    folder = GOLDEN / case
    rendered = dump_yaml(compile_bundle(load_bundle([str(folder / "input.yaml")])))
    expected = folder / "expected.yaml"
    if os.environ.get("CLRK_UPDATE_GOLDEN"):
        expected.write_text(rendered)
    assert expected.exists(), f"no golden file for {case}: run with CLRK_UPDATE_GOLDEN=1"
    assert rendered == expected.read_text()


def test_every_case_is_pinned() -> None:
    pinned = {"defaults", "warm-pool", "warm-start", "schedule", "custom-command", "several-agents", "long-runs"}
    assert pinned <= set(CASES)
