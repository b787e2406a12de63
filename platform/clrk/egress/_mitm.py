"""mitmproxy's master and built-in addons, imported once with a third-party warning silenced.

``mitmproxy.addons`` imports ``ldap3``, whose use of ``pyasn1`` raises a DeprecationWarning at
import time; the test suite turns warnings into errors. Nothing of ldap3 is used here.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from mitmproxy import master, options
    from mitmproxy.addons import next_layer, proxyserver, tlsconfig

__all__ = ["master", "next_layer", "options", "proxyserver", "tlsconfig"]
