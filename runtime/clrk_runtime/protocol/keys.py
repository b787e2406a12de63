"""Per-namespace keys, derived from the platform's one key.

The platform holds one secret key (in a cluster: a Secret in ``clrk-system``, mounted into the
ingress and the egress gateway only). Every agent namespace gets keys derived from it, one per
purpose, so that whoever reads the Secrets of one namespace can act for that namespace alone:

* ``proxy-token``: the shim signs its agents' proxy tokens with it; the gateway derives the key of
  the namespace a token names (``namespace/name`` of its agent) and checks the token with that.
* ``request``: the ingress signs each request it forwards to an agent of that namespace with it
  (:mod:`.signing`); the shim refuses a request without a good signature.
* ``callback``: the ingress signs the callback of each async invocation of an agent of that
  namespace with it (Standard Webhooks); the namespace's receivers verify with it.

One more secret is derived from the platform key, per agent rather than per namespace: the
:func:`schedule_token` in the URL a TaskSchedule's PingSource posts to. It is made straight from the
platform key (no namespace's Secret holds what makes it), so only the platform can mint one.

A derived key is HMAC-SHA256 of a label naming the purpose and the namespace, keyed by the
platform key; it is written as URL-safe base64 text, so that it travels in a Secret, a file or
an environment variable as the platform key does (readers strip surrounding whitespace).

Pure functions: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Literal

__all__ = ["KeyPurpose", "namespace_key", "namespace_of", "schedule_token", "webhook_secret"]

KeyPurpose = Literal["proxy-token", "request", "callback"]


def namespace_key(platform_key: bytes, purpose: KeyPurpose, namespace: str) -> bytes:
    """The key for ``purpose`` in ``namespace`` (ASCII bytes, 43 characters)."""
    if not platform_key:
        raise ValueError("the platform key is empty")
    if not namespace or "/" in namespace:
        raise ValueError(f"not a namespace: {namespace!r}")
    label = f"clrk/v1/{purpose}/{namespace}".encode()
    digest = hmac.new(platform_key, label, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=")


def namespace_of(agent: str) -> str:
    """The namespace of ``namespace/name``; ValueError when ``agent`` is not of that form."""
    namespace, sep, name = agent.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValueError(f"not a namespace/name agent reference: {agent!r}")
    return namespace


def schedule_token(platform_key: bytes, namespace: str, agent: str) -> str:
    """The token that lets a TaskSchedule's PingSource run the TaskAgent ``namespace/agent``
    through the ingress (43 URL-safe base64 characters, fit for a URL's path).

    A PingSource cannot send a header of its own (its adapter sends the CloudEvent's), so the
    credential travels in its sink's URL; whoever can read that PingSource can run that agent, and
    no other. HMAC-SHA256 of a label naming the agent, keyed by the platform key: the label's
    ``schedule`` part is no :data:`KeyPurpose`, so no namespace key equals a token.
    """
    if not platform_key:
        raise ValueError("the platform key is empty")
    if not namespace or "/" in namespace or not agent or "/" in agent:
        raise ValueError(f"not a namespace and an agent name: {namespace!r}, {agent!r}")
    label = f"clrk/v1/schedule/{namespace}/{agent}".encode()
    digest = hmac.new(platform_key, label, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def webhook_secret(key: bytes) -> str:
    """A derived key (the URL-safe base64 text :func:`namespace_key` makes) as a Standard Webhooks
    secret, ``whsec_`` and standard base64: what a receiver of the namespace's callbacks verifies
    their ``webhook-signature`` with."""
    raw = base64.urlsafe_b64decode(key + b"=" * (-len(key) % 4))
    return "whsec_" + base64.b64encode(raw).decode("ascii")
