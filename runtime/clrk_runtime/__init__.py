"""The clrk runtime shim: serves one TaskAgent over HTTP, one fresh sandbox per request.

It ships into every agent image and must stay small: it never imports ``clrk``.
"""

__version__ = "0.1.0"
