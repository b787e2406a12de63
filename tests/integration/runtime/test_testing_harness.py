"""``clrk_runtime.testing.invoke``: what agent authors call from their own tests."""

from __future__ import annotations

from pathlib import Path

from clrk_runtime.testing import invoke
from tests.support.runtime import SANDBOX_UID, SANDBOX_UIDS, agent


def test_invoke_runs_the_real_shim(shim_root: Path) -> None:
    fields = {"temp_root": shim_root, "sandbox_uid": SANDBOX_UID, "sandbox_uids": SANDBOX_UIDS}
    ok = invoke([agent("echo.sh")], {"q": "hi"}, **fields)
    assert ok.status == 200
    assert ok.json()["data"] == {"q": "hi"}
    assert ok.invocation_id == ok.json()["id"]
    failed = invoke([agent("fail.sh")], {}, **fields)
    assert failed.status == 502
    assert failed.stderr == "something went wrong\n"
    assert failed.headers["content-type"] == "application/json"
