"""Paths the ingress serves besides ``POST /`` (which invokes the agent named by its header)."""

from __future__ import annotations

__all__ = ["TRACES_PATH"]

TRACES_PATH = "/_clrk/traces"
"""``clrk dev`` only: recent spans as JSON (``?invocation=<id>`` for one invocation's)."""
