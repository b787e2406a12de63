"""Addresses: which are internal, how names resolve, and where an allowed name may lead.

Pure, apart from :func:`resolve` (the event loop's resolver); no mitmproxy. The allow-list
(:mod:`clrk.egress.allowlist`) resolves every allowed name itself and decides with
:func:`check_addresses`: a name with an internal address (a policy host pointed at 127.0.0.1, a
name in a private zone) opens only the port its entry states there, or 443 when it states none.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

__all__ = ["DEFAULT_PORT", "Resolver", "check_addresses", "is_internal_host", "resolve"]

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port)`` → the addresses a connection to it may use (``OSError`` when none)."""

DEFAULT_PORT = 443
"""The one port a name entry without a port opens on an internal address."""


async def resolve(host: str, port: int) -> list[str]:
    """The event loop's resolver (``getaddrinfo`` in a worker thread): never blocks the loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def is_internal_host(host: str) -> bool:
    """True for loopback, private, link-local, unspecified or reserved addresses and localhost."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def check_addresses(host: str, port: int, allow: tuple[str, ...], addresses: list[str]) -> str | None:
    """None when the allowed name ``host`` may be reached at ``addresses`` on ``port``, else why not.

    Only names matter here (an internal address or ``localhost`` listed exactly was decided by
    :func:`clrk.egress.allowlist.check_destination`): when one of their addresses is internal, the name's exact entry
    must state ``port``, or state none while ``port`` is 443.
    """
    host = host.lower().rstrip(".").strip("[]")
    if is_internal_host(host):
        return None
    internal = [a for a in addresses if is_internal_host(a)]
    if not internal:
        return None
    for entry in allow:
        name, sep, entry_port = entry.strip().lower().rpartition(":")
        if not (sep and entry_port.isdigit()):
            name, entry_port = entry.strip().lower(), ""
        if name.strip("[]").rstrip(".") != host:
            continue
        if (int(entry_port) if entry_port else DEFAULT_PORT) == port:
            return None
    return (
        f"{host} resolves to the internal address {internal[0]}; "
        f"only the port its allow-list entry states (or {DEFAULT_PORT}) is open there"
    )
