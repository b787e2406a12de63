"""Sandboxes: where one invocation's processes run, and everything they leave is removed.

:mod:`.sandboxes` (a sandbox's life: made, launched, killed, removed), :mod:`.layouts` (the
bubblewrap command line and the stub scripts, pure), :mod:`.backends` (bubblewrap or plain),
:mod:`.uids` (a host uid of its own per sandbox), :mod:`.reaping` (what a plain sandbox left
running), :mod:`.places` (the shared places a plain sandbox's uid is cleaned from), :mod:`.relay`
(the egress socket a bubblewrap sandbox reaches the gateway through), :mod:`.reading` (a file the
agent controls, read by the shim without following it: its response headers).
"""

from clrk_runtime.sandbox.sandboxes import Sandbox, SandboxKind, SandboxSpec, create_sandbox

__all__ = ["Sandbox", "SandboxKind", "SandboxSpec", "create_sandbox"]
