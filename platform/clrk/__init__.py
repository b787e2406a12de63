"""clrk: run a coding agent as an internal HTTP service, the API key kept in the egress gateway.

The names scripts use: read and check manifests, compile them for a cluster, and the errors
they raise. Everything else lives in its subpackage (``clrk.dev``, ``clrk.cluster``, …).
"""

__version__ = "0.1.0"  # before the imports below: modules read it while they load

from clrk.api import Caller, CredentialInjectionPolicy, TaskAgent, TaskSchedule
from clrk.errors import BuildError, ClrkError, ClusterError, EgressPolicyError, SpecError
from clrk.manifests import Bundle, ClusterOptions, compile_bundle, load_bundle

__all__ = [
    "BuildError",
    "Bundle",
    "Caller",
    "ClrkError",
    "ClusterError",
    "ClusterOptions",
    "CredentialInjectionPolicy",
    "EgressPolicyError",
    "SpecError",
    "TaskAgent",
    "TaskSchedule",
    "__version__",
    "compile_bundle",
    "load_bundle",
]
