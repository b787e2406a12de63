"""The HTTP stage: the shim's server, in front of one agent's runtime.

:mod:`.main` is ``clrk-shim`` (flags and ``CLRK_*`` become settings, uvicorn serves), :mod:`.app`
the ASGI app it serves by default, :mod:`.functions` the same runtime through functions-framework,
:mod:`.protocols` the uvicorn protocol classes every clrk server uses (JSON refusals, a deadline
for request heads).
"""

from clrk_runtime.server.app import ShimApp
from clrk_runtime.server.protocols import http_protocol

__all__ = ["ShimApp", "http_protocol"]
