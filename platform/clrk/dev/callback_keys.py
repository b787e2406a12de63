"""``clrk dev``'s callback key: the secret its async invocations' callbacks are signed with.

In a cluster each namespace's callback secret is derived from the platform key. ``clrk dev``
makes a platform key at every start, which would change every receiver's secret at every start;
so it keeps a key of its own for callbacks, made once, in ``<state_dir>/callback.key`` (0600),
and derives each namespace's key from it the same way
(:func:`~clrk_runtime.protocol.keys.namespace_key`, purpose ``callback``).

A receiver needs its namespace's Standard Webhooks secret (``whsec_…``): ``clrk dev`` writes one
file per namespace it serves, ``<state_dir>/callback-secrets/<namespace>`` (0600, in a 0700
folder), and says where at start.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from clrk.errors import ClrkError
from clrk.ingress import callback_secret
from clrk_runtime.protocol.keys import namespace_key

__all__ = ["CallbackKeys"]

KEY_FILE = "callback.key"
SECRETS_DIR = "callback-secrets"


def _read(path: Path) -> bytes:
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(descriptor, "rb") as file:
        return file.read().strip()


def _write(path: Path, data: bytes, *, exclusive: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_EXCL if exclusive else os.O_TRUNC)
    descriptor = os.open(path, flags, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(data)


class CallbackKeys:
    """The callback key of the state directory ``state_dir`` (made on first use)."""

    def __init__(self, state_dir: Path) -> None:
        self.key_file = state_dir / KEY_FILE
        self.secrets_dir = state_dir / SECRETS_DIR
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileExistsError):  # made by an earlier start: kept
            _write(self.key_file, secrets.token_urlsafe(32).encode("ascii"), exclusive=True)
        self._key = _read(self.key_file)
        if not self._key:
            raise ClrkError(f"{self.key_file} is empty: remove it, and clrk dev makes a new callback key")

    def secret(self, namespace: str) -> str:
        """The Standard Webhooks secret (``whsec_…``) receivers of ``namespace``'s callbacks verify with."""
        return callback_secret(namespace_key(self._key, "callback", namespace))

    def publish(self, namespaces: Iterable[str]) -> Path:
        """Write each namespace's secret to ``callback-secrets/<namespace>``; the folder."""
        self.secrets_dir.mkdir(mode=0o700, exist_ok=True)
        self.secrets_dir.chmod(0o700)
        for namespace in sorted(set(namespaces)):
            _write(self.secrets_dir / namespace, (self.secret(namespace) + "\n").encode("ascii"), exclusive=False)
        return self.secrets_dir
