"""The ingress: authenticates callers and routes ``POST /`` to an agent's runtime shim; keeps,
runs and reports async invocations (``Prefer: respond-async``)."""

from clrk.ingress.app import InvocationRecord, create_app
from clrk.ingress.callbacks import CallbackSender, callback_secret, check_callback_url
from clrk.ingress.callers import CallerKey, CallerKeys, caller_key, key_digest
from clrk.ingress.dispatching import Dispatcher, LocalDispatcher
from clrk.ingress.forwarding import AgentTarget, Forwarder, HttpForwarder, InProcessForwarder
from clrk.ingress.invocations import AsyncRuns
from clrk.ingress.records import CallbackState, Result, RunRecord, RunStore, Usage
from clrk.ingress.run_files import FileRunStore
from clrk.ingress.running import RunLost, Runner
from clrk.ingress.settings import IngressSettings

__all__ = [
    "AgentTarget",
    "AsyncRuns",
    "CallbackSender",
    "CallbackState",
    "CallerKey",
    "CallerKeys",
    "Dispatcher",
    "FileRunStore",
    "Forwarder",
    "HttpForwarder",
    "InProcessForwarder",
    "IngressSettings",
    "InvocationRecord",
    "LocalDispatcher",
    "Result",
    "RunLost",
    "RunRecord",
    "RunStore",
    "Runner",
    "Usage",
    "callback_secret",
    "caller_key",
    "check_callback_url",
    "create_app",
    "key_digest",
]
