from __future__ import annotations

import subprocess
import sys

import pytest


def _loaded(imports: str) -> str:
    code = (
        f"import sys, {imports}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] == 'mitmproxy'}"
        " | {m for m in sys.modules if m.startswith('clrk.egress.gateway')}))"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize(
    "imports",
    [
        "clrk.api, clrk.api.egress, clrk.manifests",  # the compiler sits below the gateway
        "clrk.cli.app",  # every command: `clrk validate` must not wait for mitmproxy to load
        "clrk.egress, clrk.egress.settings, clrk.egress.secrets",
    ],
)
def test_what_needs_no_gateway_loads_no_mitmproxy(imports: str) -> None:
    assert _loaded(imports) == "[]"


def test_the_gateway_still_loads() -> None:
    assert _loaded("clrk.egress.gateway") == "['clrk.egress.gateway', 'mitmproxy']"
