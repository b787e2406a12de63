"""A plain sandbox worth the name (what every pod runs), tried as an attacker would from inside one,
under the shim's real HTTP app run as root: writes land only in its own directory, TCP reaches only
the egress gateway's port, signals and abstract sockets stay inside, a setuid-root program gives
no root, and a fork bomb or a huge file is bounded while the server serves others. On a kernel
with less Landlock (``landlock_abi`` caps it here) the sandbox runs with what exists, and the
shim says what is missing, in its log and in ``/readyz``.

The test stands in for the egress gateway (``egress_proxy`` points at it): agents may reach it, so
it is also how they report and wait (see tests/agents/confined.sh and bomb.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from clrk.manifests.compiling import SHIM_CAPABILITIES
from clrk_runtime.launching import landlock
from tests.support.runtime import agent, serving, settings_for, shim_port, shim_process

KERNEL_ABI = landlock.kernel_abi()
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="a uid of the sandbox's own and a setuid-root program need root"),
    pytest.mark.skipif(KERNEL_ABI < 6, reason=f"this kernel's Landlock ABI is {KERNEL_ABI}: scopes need 6"),
]
SHARED = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
"""Places every uid may write to on this host (/run/lock is 1777 on Debian)."""
FILE_CAP = 1024 * 1024


@dataclass
class Gateway:
    """The test's stand-in for the egress gateway: "uid N" gets the pid of a ``sleep`` run as
    uid N outside any sandbox; "hold …" and "forked …" lines are queued and held until
    ``release`` is set; anything else gets "pong"."""

    port: int = 0
    arrived: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    sleepers: list[asyncio.subprocess.Process] = field(default_factory=list)


@asynccontextmanager
async def gateway() -> AsyncIterator[Gateway]:
    stand_in = Gateway()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = (await reader.readline()).decode().strip()
            word, _, rest = line.partition(" ")
            answer = "pong"
            if word == "uid":
                uid = int(rest)
                sleeper = await asyncio.create_subprocess_exec("sleep", "60", user=uid, group=uid, extra_groups=[])
                stand_in.sleepers.append(sleeper)
                answer = str(sleeper.pid)
            elif word in ("hold", "forked"):
                await stand_in.arrived.put(line)
                await asyncio.wait_for(stand_in.release.wait(), 60)
                answer = "open"
            writer.write(f"{answer}\n".encode())
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    stand_in.port = server.sockets[0].getsockname()[1]
    try:
        async with server:
            yield stand_in
    finally:
        stand_in.release.set()
        for sleeper in stand_in.sleepers:
            with contextlib.suppress(ProcessLookupError):
                sleeper.kill()
            await sleeper.wait()


@asynccontextmanager
async def bystanders() -> AsyncIterator[tuple[int, str]]:
    """A local TCP listener that is not the gateway, and an abstract unix socket the test holds:
    (its port, the socket's name)."""
    name = f"clrk-test-{uuid.uuid4().hex[:12]}"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind(f"\0{name}")
    abstract.listen(8)
    server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
    try:
        async with server:
            yield server.sockets[0].getsockname()[1], name
    finally:
        abstract.close()


@pytest.fixture
def setuid_id() -> Iterator[Path]:
    """A setuid-root copy of ``id`` where every uid may run it."""
    folder = Path(tempfile.mkdtemp(prefix="clrk-test-setuid-", dir="/var/tmp"))
    folder.chmod(0o755)
    program = folder / "id"
    shutil.copy("/usr/bin/id", program)
    program.chmod(0o4755)
    yield program
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def mark() -> Iterator[str]:
    """A file name no one else uses; whatever an unconfined run left under it is removed."""
    name = f"clrk-test-{secrets.token_hex(6)}"
    yield name
    for place in SHARED:
        for leftover in Path(place).glob(f"{name}*"):
            leftover.unlink(missing_ok=True)


def _lines(text: str) -> dict[str, str]:
    return {name: value.strip() for name, _, value in (line.partition(": ") for line in text.splitlines())}


async def _probe(client: httpx.AsyncClient, **data: Any) -> dict[str, str]:
    response = await client.post("/", json={"mode": "probe", **data}, timeout=60)
    assert response.status_code == 200, response.text
    return _lines(response.text)


async def test_a_plain_sandbox_writes_only_its_own_dirs_and_reaches_only_the_gateway(
    shim_root: Path, mark: str, setuid_id: Path
) -> None:
    """Its own HOME, TMPDIR and work dir and /dev/null, yes; the shared places, and a careless
    neighbour's HOME opened to all (777), no. TCP to the shim's own port or another local
    listener, a bind, an abstract socket the test holds, a signal to a process of its own uid
    outside the sandbox: all refused, the gateway reached. A setuid-root program runs without
    root; a file is cut at the size limit. Today's plain sandbox did every one of these."""
    async with gateway() as gate, bystanders() as (other_port, abstract):
        settings = settings_for(
            "plain",
            shim_root,
            [agent("confined.sh")],
            egress_proxy=f"127.0.0.1:{gate.port}",
            sandbox_file_size=FILE_CAP,
        )
        async with serving(settings) as (client, _runtime):
            shim_port = client.base_url.port
            victim = asyncio.create_task(client.post("/", json={"mode": "hold"}, timeout=60))
            victim_home = (await asyncio.wait_for(gate.arrived.get(), 30)).partition(" ")[2]
            places = [*SHARED, victim_home]
            ports = [shim_port, other_port, gate.port]
            result = await _probe(
                client,
                mark=mark,
                places=places,
                ports=ports,
                abstract=abstract,
                setuid=str(setuid_id),
                big=8 * FILE_CAP,
                signal="gateway",
            )
            planted = [place for place in places if os.path.lexists(f"{place}/{mark}")]
            ready = await client.get("/readyz")
            gate.release.set()
            held = await victim
        sleeper_status = [sleeper.returncode for sleeper in gate.sleepers]
    assert planted == [], f"written outside its own directory: {planted}; {result}"
    for place in places:
        assert result[f"write {place}"].endswith("Permission denied"), result
        assert result[f"symlink {place}"].endswith("Permission denied"), result
    own = [name for name in result if name.startswith("write own ")]
    assert len(own) == 3 and all(result[name] == "ok" for name in own), result
    assert result["write /dev/null"] == "ok"
    assert result[f"tcp {gate.port}"] == "connected"
    for port in (shim_port, other_port):
        assert result[f"tcp {port}"].endswith("Permission denied"), result
    assert result["bind"].endswith("Permission denied"), result
    assert result["abstract"].endswith("Operation not permitted"), result
    assert result["signal"].endswith("Operation not permitted"), result
    assert sleeper_status != [-signal.SIGTERM], "the agent's signal reached a process outside its sandbox"
    assert result["setuid"].startswith("uid=") and "euid=0" not in result["setuid"], result["setuid"]
    assert result["open-files"] == str(settings.sandbox_open_files)
    assert result["big"] == f"exit {128 + signal.SIGXFSZ} size {FILE_CAP}", result["big"]
    assert held.status_code == 200, held.text
    assert ready.status_code == 200
    assert ready.json()["sandbox"] == {
        "kind": "plain",
        "landlockAbi": KERNEL_ABI,
        "kernelLandlockAbi": KERNEL_ABI,
        "missing": [],
    }


@pytest.mark.timeout(180)
async def test_a_fork_bomb_is_bounded_and_the_server_serves_others(shim_root: Path) -> None:
    """Two fork bombs at once, each held at its limit by the test: each got at most
    ``sandbox_processes``, and meanwhile the server answered its probe. Today: 400 forks each."""
    async with gateway() as gate:
        settings = settings_for(
            "plain", shim_root, [agent("bomb.py")], egress_proxy=f"127.0.0.1:{gate.port}", sandbox_processes=32
        )
        async with serving(settings) as (client, _runtime):
            first = asyncio.create_task(client.post("/", json={}, timeout=120))
            forked = [await asyncio.wait_for(gate.arrived.get(), 90)]
            second = asyncio.create_task(client.post("/", json={}, timeout=120))
            forked.append(await asyncio.wait_for(gate.arrived.get(), 90))
            health = await client.get("/healthz")
            gate.release.set()
            answers = [await first, await second]
    counts = [int(line.split()[1]) for line in forked]
    assert all(0 < count < settings.sandbox_processes for count in counts), counts
    assert health.status_code == 200
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]


@pytest.mark.parametrize(
    ("abi", "missing"),
    [
        (3, ["net.tcp", "fs.ioctl_dev", "scope.abstract_unix_socket", "scope.signal"]),
        (0, [name for name, _ in landlock.PIECES]),
    ],
)
async def test_less_landlock_runs_with_what_exists_and_says_what_is_missing(
    abi: int, missing: list[str], shim_root: Path, mark: str, setuid_id: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``landlock_abi`` 3 (a 6.2 kernel): writes are still confined, TCP is not; 0 (no Landlock):
    neither, but no_new_privs and the limits still hold. Either way one warning at start names
    the missing pieces, and ``/readyz`` (still 200) lists them."""
    caplog.set_level(logging.WARNING, logger="clrk_runtime.service.runtime")
    async with gateway() as gate, bystanders() as (other_port, abstract):
        settings = settings_for(
            "plain",
            shim_root,
            [agent("confined.sh")],
            egress_proxy=f"127.0.0.1:{gate.port}",
            sandbox_file_size=FILE_CAP,
            landlock_abi=abi,
        )
        async with serving(settings) as (client, _runtime):
            ready = await client.get("/readyz")
            result = await _probe(
                client,
                mark=mark,
                places=["/var/tmp"],
                ports=[other_port],
                abstract=abstract,
                setuid=str(setuid_id),
                big=8 * FILE_CAP,
            )
    warnings = [r.getMessage() for r in caplog.records if r.name == "clrk_runtime.service.runtime"]
    assert len(warnings) == 1 and ", ".join(missing) in warnings[0], warnings
    assert f"CLRK_LANDLOCK_ABI={abi}" in warnings[0]
    assert ready.status_code == 200
    assert ready.json()["sandbox"] == {
        "kind": "plain",
        "landlockAbi": abi,
        "kernelLandlockAbi": KERNEL_ABI,
        "missing": missing,
    }
    written = result["write /var/tmp"]
    assert written == "ok" if abi == 0 else written.endswith("Permission denied"), written
    assert result[f"tcp {other_port}"] == "connected"
    assert result["setuid"].startswith("uid=") and "euid=0" not in result["setuid"], result["setuid"]
    assert result["big"] == f"exit {128 + signal.SIGXFSZ} size {FILE_CAP}", result["big"]


@pytest.mark.parametrize("how", ["big", "many"])
async def test_a_sandbox_that_writes_past_its_storage_is_killed_with_a_clear_error(how: str, shim_root: Path) -> None:
    """One file over ``sandbox_file_size`` (its writer is killed by the kernel), or many files
    under it that fill the sandbox's directory past ``sandbox_disk`` (the spawner's meter kills
    the sandbox): either way 502 ``storage_exceeded``, and the server still answers. Today: 200
    with the whole file, or the directory grows until the deadline (504)."""
    settings = settings_for(
        "plain",
        shim_root,
        [agent("hoard.sh"), how],
        sandbox_file_size=FILE_CAP,
        sandbox_disk=4 * FILE_CAP,
        timeout=15,
    )
    async with serving(settings) as (client, _runtime):
        response = await client.post("/", json={}, timeout=30)
        health = await client.get("/healthz")
    assert response.status_code == 502, response.text
    assert response.json()["error"]["type"] == "storage_exceeded", response.text
    assert health.status_code == 200


async def test_a_pods_capabilities_and_a_low_hard_limit_are_enough(shim_root: Path, mark: str) -> None:
    """The real clrk-shim with only the capabilities its pod keeps (no CAP_SYS_RESOURCE) and a hard
    descriptor limit below ``sandbox_open_files``: the sandbox starts, confined, with the hard
    limit it could have (a limit is never raised)."""
    bounding = ",".join(["-all", *(f"+{name.lower()}" for name in SHIM_CAPABILITIES)])
    prefix = ("prlimit", "--nofile=1000:1000", "--", "setpriv", f"--bounding-set={bounding}", "--inh-caps=-all", "--")
    script = f"cat >/dev/null; ulimit -n; (echo x >/tmp/{mark}) 2>/dev/null && echo written || echo refused"
    async with shim_process(shim_root, "--sandbox", "plain", "--", "sh", "-c", script, prefix=prefix) as shim:
        port = await shim_port(shim)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            response = await client.post("/", json={})
        shim.terminate()
        assert await shim.wait() == 0
    assert response.status_code == 200, response.text
    assert response.text.split() == ["1000", "refused"]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a killed process not yet reaped is a zombie: not alive)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_the_end_of_a_sandbox_kills_no_host_process_of_its_uid(shim_root: Path) -> None:
    """A process outside any sandbox that runs as the uid a sandbox got (on a host, a systemd
    dynamic user shares that range) outlives the sandbox: the spawner, in a Landlock domain that
    scopes its signals, sweeps only the sandbox's own processes. Today's sweep, a ``kill(-1)``
    as that uid, killed it too."""
    script = 'cat >/dev/null; g=${HTTPS_PROXY#http://}; g=${g##*@}; echo "uid $(id -u)" | socat -t 10 - "TCP:$g"'
    async with gateway() as gate:
        settings = settings_for("plain", shim_root, ["sh", "-c", script], egress_proxy=f"127.0.0.1:{gate.port}")
        async with serving(settings) as (client, _runtime):
            response = await client.post("/", json={})
            (sleeper,) = gate.sleepers
            alive_after = _alive(sleeper.pid)
    assert response.status_code == 200, response.text
    assert response.text.strip() == str(sleeper.pid)
    assert alive_after, "the sweep of the sandbox's uid killed a process outside the sandbox"
