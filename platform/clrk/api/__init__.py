"""clrk's resources, API group ``clrk.dev/v1alpha1``: pydantic models, the one source of truth.

The CRD YAML is generated from these models (``clrk crds``), never written by hand.
"""

from clrk.api.callers import Caller
from clrk.api.common import API_GROUP, API_VERSION, ObjectMeta, Resource
from clrk.api.policies import CredentialInjectionPolicy
from clrk.api.schedules import TaskSchedule
from clrk.api.taskagent import TaskAgent

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "KINDS",
    "Caller",
    "CredentialInjectionPolicy",
    "ObjectMeta",
    "Resource",
    "TaskAgent",
    "TaskSchedule",
]

KINDS: dict[str, type[Resource]] = {
    "TaskAgent": TaskAgent,
    "CredentialInjectionPolicy": CredentialInjectionPolicy,
    "TaskSchedule": TaskSchedule,
    "Caller": Caller,
}
"""Our kinds by name; any other kind in a manifest passes through untouched."""
