"""A plain sandbox's confinement, without a sandbox: which Landlock pieces each ABI brings, what a
sandbox is held to for a given set of settings, and how the shim reports and answers it."""

import json
import signal
from pathlib import Path

import pytest
from pydantic import ValidationError

from clrk_runtime.invocation.outcomes import RunResult, map_outcome
from clrk_runtime.launching import landlock
from clrk_runtime.launching.spawner import Spawner
from clrk_runtime.sandbox.sandboxes import SandboxSpec, _plain_confinement
from clrk_runtime.service.runtime import SandboxReport
from clrk_runtime.settings import RuntimeSettings

ALL = [name for name, _ in landlock.PIECES]


@pytest.mark.parametrize(
    ("abi", "missing"),
    [
        (7, []),
        (6, []),
        (5, ["scope.abstract_unix_socket", "scope.signal"]),
        (3, ["net.tcp", "fs.ioctl_dev", "scope.abstract_unix_socket", "scope.signal"]),
        (1, ALL[1:]),
        (0, ALL),
    ],
)
def test_each_abi_lacks_the_pieces_that_came_after_it(abi: int, missing: list[str]) -> None:
    assert landlock.missing(abi) == missing


def test_the_setting_caps_the_kernels_abi_and_never_raises_it() -> None:
    assert landlock.abi_in_use(None, 7) == 7
    assert landlock.abi_in_use(3, 7) == 3
    assert landlock.abi_in_use(9, 4) == 4
    assert landlock.abi_in_use(None, 0) == 0


def test_a_confinement_crosses_to_the_spawner_unchanged() -> None:
    confinement = landlock.Confinement(6, ("/s/1",), (3128,), 512, 1024, 64, 4096)
    assert landlock.Confinement.from_wire(confinement.to_wire()) == confinement


def _spec(tmp_path: Path, **fields: object) -> SandboxSpec:
    settings = RuntimeSettings(command=["true"], **fields)  # type: ignore[arg-type]
    return SandboxSpec("plain", settings, tmp_path, None, True, Spawner(), landlock_abi=7)


def test_a_plain_sandbox_writes_in_its_directory_and_connects_to_the_gateway_only(tmp_path: Path) -> None:
    spec = _spec(tmp_path, egress_proxy="10.0.0.7:3128", sandbox_processes=64, sandbox_disk=1 << 20)
    confinement = _plain_confinement(spec, "/shim/abc", own_uid=True)
    assert confinement == landlock.Confinement(
        abi=7,
        writable=("/shim/abc",),
        connect_ports=(3128,),
        processes=64,
        file_size=spec.settings.sandbox_file_size,
        open_files=spec.settings.sandbox_open_files,
        disk=1 << 20,
    )


def test_without_a_gateway_no_port_and_without_its_own_uid_no_process_limit(tmp_path: Path) -> None:
    """RLIMIT_NPROC counts per uid: with the shim's own uid it would count the shim's processes."""
    confinement = _plain_confinement(_spec(tmp_path), "/shim/abc", own_uid=False)
    assert confinement.connect_ports == ()
    assert confinement.processes is None


def test_the_abi_setting_is_read_from_the_environment_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLRK_LANDLOCK_ABI", "3")
    assert RuntimeSettings().landlock_abi == 3
    monkeypatch.setenv("CLRK_LANDLOCK_ABI", "-1")
    with pytest.raises(ValidationError, match="landlock_abi"):
        RuntimeSettings()


def test_readyz_details_name_what_a_plain_sandbox_lacks() -> None:
    missing = tuple(landlock.missing(3))
    assert SandboxReport("plain", 3, 7, missing).details() == {
        "kind": "plain",
        "landlockAbi": 3,
        "kernelLandlockAbi": 7,
        "missing": list(missing),
    }
    assert SandboxReport("bwrap", 0, 7, ()).details() == {"kind": "bwrap"}


def test_a_run_killed_for_its_storage_is_a_502_that_says_so() -> None:
    response = map_outcome(RunResult(-signal.SIGXFSZ), "id-1", 10)
    assert response.status == 502
    error = json.loads(response.body)["error"]
    assert error["type"] == "storage_exceeded"
    assert "sandbox_file_size" in error["message"] and "sandbox_disk" in error["message"]
