"""A real Kubernetes API server for tests: etcd + kube-apiserver on free loopback ports.

No controllers, no scheduler, no kubelet: objects are stored, validated (CRD schemas, defaulting),
server-side applied with field managers, dry-run and 409 conflicts, exactly as a cluster does it.
Nothing reconciles them, so a Knative Service never becomes Ready here.

The binaries come from ``$CLRK_ENVTEST_DIR/bin`` (default ``~/.cache/clrk-envtest/bin``), built by
``hack/envtest.sh``. The server trusts static tokens (``--token-auth-file``): the admin's, which the
kubeconfig written beside it holds, and one per service account named at start (what a pod's
mounted token would be, with the same user name and groups, so RBAC applies to it as in a
cluster); the kubeconfig trusts a throwaway CA that signed the serving certificate (for
127.0.0.1, localhost and the address it listens on), so no request runs with TLS verification off.
The server listens on 127.0.0.1, or on another address of this host that containers can reach
(a podman network's gateway): etcd stays on loopback.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from clrk.manifests.documents import dump_all
from tests.support.tlsca import TestCA

__all__ = ["EnvTest", "binaries_dir", "missing_binaries"]

TOKEN = "clrk-envtest-token"
BUILD_HINT = "build them with `hack/envtest.sh` (wraps hack/build-kube-apiserver, ~4 min, offline)"


def binaries_dir() -> Path:
    return Path(os.environ.get("CLRK_ENVTEST_DIR", Path.home() / ".cache" / "clrk-envtest")) / "bin"


def missing_binaries() -> str | None:
    """Why the tier cannot run, or None when both binaries are there."""
    folder = binaries_dir()
    missing = [name for name in ("etcd", "kube-apiserver") if not os.access(folder / name, os.X_OK)]
    if not missing:
        return None
    return f"no {' and '.join(missing)} in {folder} ($CLRK_ENVTEST_DIR/bin): {BUILD_HINT}"


def _die_with_parent() -> None:
    """In the child: get SIGTERM when pytest dies, however it dies (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def _free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def _rsa_pem(path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem)
    path.chmod(0o600)


@dataclass
class EnvTest:
    """One etcd and one kube-apiserver; :meth:`stop` ends both and removes the work folder."""

    root: Path
    url: str = ""
    kubeconfig: Path = field(default_factory=Path)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    address: str = "127.0.0.1"
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)
    """The token of each service account named at start, by ``(namespace, name)``."""

    @property
    def ca_path(self) -> Path:
        """The CA certificate that signed the server's (a pod's ``ca.crt``)."""
        return self.root / "pki" / "ca.pem"

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @classmethod
    def start(
        cls, timeout: float = 60.0, *, address: str = "127.0.0.1", service_accounts: Iterable[tuple[str, str]] = ()
    ) -> EnvTest:
        """``address``: where the API server listens; ``service_accounts``: ``(namespace, name)``
        pairs to issue tokens for (:attr:`tokens`)."""
        base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else None  # etcd fsyncs: tmpfs is fast
        env = cls(Path(tempfile.mkdtemp(prefix="clrk-envtest-", dir=base)), address=address)
        env.tokens = {account: secrets.token_hex(24) for account in service_accounts}
        try:
            env._start(timeout)
        except BaseException:
            env.stop()
            raise
        return env

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent
        )
        log.close()
        self.processes.append(proc)
        return proc

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.root / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def _start(self, timeout: float) -> None:
        bin_dir = binaries_dir()
        client, peer, secure = _free_port(), _free_port(), _free_port(self.address)
        etcd_url = f"http://127.0.0.1:{client}"
        self._spawn(
            "etcd",
            [
                str(bin_dir / "etcd"),
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=default=http://127.0.0.1:{peer}",
            ],
        )
        ca = TestCA.create(self.root / "pki", "clrk envtest CA")
        leaf = ca.issue(list(dict.fromkeys(["127.0.0.1", "localhost", self.address])), name="apiserver")
        sa_key = self.root / "pki" / "sa.key"
        _rsa_pem(sa_key)
        tokens = self.root / "tokens.csv"
        lines = [f'{TOKEN},clrk-admin,clrk-admin,"system:masters"']
        for (namespace, name), token in self.tokens.items():
            groups = f"system:serviceaccounts,system:serviceaccounts:{namespace},system:authenticated"
            lines.append(f'{token},system:serviceaccount:{namespace}:{name},{namespace}-{name},"{groups}"')
        tokens.write_text("\n".join(lines) + "\n")
        self._spawn(
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={self.address}",
                f"--secure-port={secure}",
                f"--tls-cert-file={leaf.cert_path}",
                f"--tls-private-key-file={leaf.key_path}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=RBAC",
                f"--service-account-key-file={sa_key}",
                f"--service-account-signing-key-file={sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--disable-admission-plugins=ServiceAccount",  # no controller-manager issues tokens here
                "--allow-privileged=true",
                f"--cert-dir={self.root / 'certs'}",
            ],
        )
        self.url = f"https://{self.address}:{secure}"
        self._wait_ready(ca.cert_path, timeout)
        self.kubeconfig = self.root / "kubeconfig"
        self.kubeconfig.write_text(dump_all([self._kubeconfig(ca.cert_path)]))

    def _kubeconfig(self, ca_path: Path) -> dict[str, object]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "envtest", "cluster": {"server": self.url, "certificate-authority": str(ca_path)}}],
            "users": [{"name": "envtest", "user": {"token": TOKEN}}],
            "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": "envtest"}}],
            "current-context": "envtest",
        }

    def _wait_ready(self, ca_path: Path, timeout: float) -> None:
        ctx = ssl.create_default_context(cafile=str(ca_path))
        request = urllib.request.Request(f"{self.url}/readyz", headers={"Authorization": f"Bearer {TOKEN}"})  # noqa: S310
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for proc, name in zip(self.processes, ("etcd", "kube-apiserver"), strict=False):
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            try:
                with urllib.request.urlopen(request, context=ctx, timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except OSError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise RuntimeError(f"kube-apiserver not ready after {timeout:g}s ({last}):\n{self.log_tail('kube-apiserver')}")

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=3)  # throwaway state: no need to let it drain long requests
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()
        shutil.rmtree(self.root, ignore_errors=True)
        if self.url:  # the kubernetes client's discovery cache, one file per server URL
            digest = hashlib.md5(self.url.encode(), usedforsecurity=False).hexdigest()
            (Path(tempfile.gettempdir()) / f"osrcp-{digest}.json").unlink(missing_ok=True)
