"""What is running on this host, read from /proc: how tests count what a sandbox left behind."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["live_processes"]


def live_processes(uids: range | None = None, names: tuple[str, ...] = ()) -> dict[int, str]:
    """Live (non-zombie) processes run by one of ``uids`` or named one of ``names``: pid → cmdline."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("State", "").strip().startswith("Z"):
            continue
        if (uids is not None and int(fields["Uid"].split()[0]) in uids) or fields["Name"].strip() in names:
            found[int(entry)] = cmdline
    return found
