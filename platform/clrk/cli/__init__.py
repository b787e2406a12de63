"""The ``clrk`` command line."""

from clrk.cli.app import app, main

__all__ = ["app", "main"]
