"""The gateway's certificate authority and the CA bundle agents trust.

Layout under ``<state_dir>/egress``::

    ca/                      0700: mitmproxy's CA (``mitmproxy-ca.pem`` holds the private key, 0600)
    ca-cert.pem              0644: our CA certificate alone (public)
    ca-bundle.pem            0644: system CAs plus ours, for SSL_CERT_FILE, NODE_EXTRA_CA_CERTS,
                             REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE in the agent's environment
    upstream-trust.pem       0644: system CAs plus ``--egress-upstream-ca``, only when one is given

The CA is created on first start and reused after; nothing here is secret but ``ca/``.

A CA can also be given in advance: put mitmproxy's ``mitmproxy-ca.pem`` (key and certificate)
and ``mitmproxy-ca-cert.pem`` into ``ca/`` before the first start, and :func:`ensure_ca` uses
them as they are. A cluster does so (an init container copies Secret ``clrk-ca-key`` there, see
``platform/config/egress.yaml``), and the tests share one CA per session that way instead of
generating a key for every gateway.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import certifi
from mitmproxy import certs

__all__ = ["CA_BASENAME", "CaFiles", "ensure_ca", "system_ca_pem", "write_trust_bundle"]

CA_BASENAME = "mitmproxy"
SYSTEM_CA_FILE = Path("/etc/ssl/certs/ca-certificates.crt")
_KEY_SIZE = 2048


@dataclass(frozen=True, slots=True)
class CaFiles:
    confdir: Path
    """mitmproxy's ``confdir``: holds the CA private key, readable by the owner only."""
    cert: Path
    """Our CA certificate (public)."""
    bundle: Path
    """System CAs plus ours: what an agent's CA-trust variables point at."""


def system_ca_pem() -> bytes:
    path = SYSTEM_CA_FILE if SYSTEM_CA_FILE.is_file() else Path(certifi.where())
    return path.read_bytes()


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    os.replace(tmp, path)


def write_trust_bundle(path: Path, *extra_pems: bytes) -> Path:
    """System CAs followed by ``extra_pems``, written atomically, world-readable."""
    parts = [system_ca_pem().rstrip(b"\n"), *(p.strip() for p in extra_pems)]
    _write_public(path, b"\n".join(parts) + b"\n")
    return path


def ensure_ca(egress_dir: Path) -> CaFiles:
    """Create (first start) or reuse the CA, tighten its permissions, and write the bundle."""
    egress_dir.mkdir(parents=True, exist_ok=True)
    confdir = egress_dir / "ca"
    confdir.mkdir(mode=0o700, exist_ok=True)
    confdir.chmod(0o700)
    if not (confdir / f"{CA_BASENAME}-ca.pem").exists():
        certs.CertStore.create_store(confdir, CA_BASENAME, _KEY_SIZE)
    for private in (f"{CA_BASENAME}-ca.pem", f"{CA_BASENAME}-ca.p12"):
        if (confdir / private).exists():
            (confdir / private).chmod(0o600)
    pem = (confdir / f"{CA_BASENAME}-ca-cert.pem").read_bytes()
    cert = egress_dir / "ca-cert.pem"
    _write_public(cert, pem)
    bundle = write_trust_bundle(egress_dir / "ca-bundle.pem", pem)
    return CaFiles(confdir=confdir, cert=cert, bundle=bundle)
