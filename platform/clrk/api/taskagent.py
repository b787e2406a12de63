"""TaskAgent: an agent program served over HTTP, one fresh sandbox per request."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from clrk.api.common import DNS_LABEL_RULE, Duration, ObjectMeta, Resource, Spec, is_dns_label
from clrk.api.resources import AgentResources
from clrk_runtime.protocol.durations import MAX_TIMEOUT_S

__all__ = [
    "ANNOTATION_BUILD_CONTEXT",
    "DEFAULT_TIMEOUT",
    "MAX_TIMEOUT",
    "AgentBudget",
    "AgentCallback",
    "AgentContainer",
    "AgentEgressSpec",
    "EnvVar",
    "PodTemplate",
    "TaskAgent",
    "TaskAgentSpec",
    "agent_name_problem",
]

ANNOTATION_BUILD_CONTEXT = "clrk.dev/build-context"
"""Folder (relative to the manifest) holding the agent's Dockerfile."""

DEFAULT_TIMEOUT = timedelta(seconds=100)
MAX_TIMEOUT = timedelta(seconds=MAX_TIMEOUT_S)

VALUE_FROM_MESSAGE = (
    "not supported: an agent never holds secrets; keep a literal placeholder in 'value' "
    "and use a CredentialInjectionPolicy so the egress gateway injects the real one"
)


class EnvVar(Spec):
    """One literal environment variable for the agent."""

    name: str = Field(min_length=1)
    value: str = ""
    value_from: Any = Field(None, alias="valueFrom", exclude=True, json_schema_extra={"x-clrk-forbidden": True})

    @field_validator("value_from")
    @classmethod
    def _no_value_from(cls, value: Any) -> None:
        if value is not None:
            raise ValueError(VALUE_FROM_MESSAGE)
        return None


class AgentContainer(Spec):
    """What runs: the image and, optionally, the entrypoint that overrides the image's."""

    image: str = Field(min_length=1)
    command: list[str] | None = None
    args: list[str] | None = None
    env: list[EnvVar] = Field(default_factory=list)

    @field_validator("env")
    @classmethod
    def _unique_names(cls, env: list[EnvVar]) -> list[EnvVar]:
        seen: set[str] = set()
        for var in env:
            if var.name in seen:
                raise ValueError(f"variable {var.name!r} is listed twice")
            seen.add(var.name)
        return env


class PodTemplate(Spec):
    spec: AgentContainer


class AgentEgressSpec(Spec):
    allow: list[str] = Field(default_factory=list)
    """Hosts the agent may reach besides those of its CredentialInjectionPolicies."""


class AgentCallback(Spec):
    """Where the signed CloudEvent of each finished async invocation goes when its request named
    no ``X-Clrk-Callback-Url``."""

    url: str = Field(min_length=1)
    """An ``http://`` or ``https://`` URL."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if not sep or scheme.lower() not in ("http", "https") or not rest or any(c.isspace() for c in value):
            raise ValueError(f"expected an http:// or https:// URL, found {value!r}")
        return value


class AgentBudget(Spec):
    """A ceiling of model tokens (input + output, cache included) per rolling window."""

    tokens: int = Field(gt=0)
    window: Duration = timedelta(hours=1)


class TaskAgentSpec(Spec):
    template: PodTemplate
    timeout: Duration = DEFAULT_TIMEOUT
    """End-to-end deadline of one invocation, ingress to answer; at most 3600s. A synchronous call
    is also cut at 600s (``MAX_SYNC_TIMEOUT_S``): a longer timeout is for async invocations."""
    warm_pool_size: int = Field(0, ge=0)
    """Sandboxes kept created and waiting; in a cluster, also the Knative min-scale."""
    warm_start: bool = False
    """Start the agent's entrypoint in each warm sandbox before its request comes: what the agent
    does before it reads stdin (a runtime's start-up, loading files) is paid while the sandbox
    waits, not by the caller. The agent writes one line (any text) to the descriptor
    ``$CLRK_READY_FD`` names once it is ready, then reads its envelope from stdin as without warm
    start; one that exits before or does not write within 60 s is replaced, and after 3 such
    failures in a row the agent is started on request again. Needs ``warmPoolSize`` of at least 1."""
    max_concurrency: int | None = Field(None, gt=0)
    """Invocations running at once across all replicas; unset means Knative decides. At least
    ``warmPoolSize``: in a cluster every warm pod runs at least one invocation, so fewer would
    make Knative's max-scale fall below its min-scale, which Knative refuses."""
    egress: AgentEgressSpec = Field(default_factory=AgentEgressSpec)
    budget: AgentBudget | None = None
    callback: AgentCallback | None = None
    """Default callback of async invocations (``Prefer: respond-async``)."""
    resources: AgentResources | None = None
    """CPU, memory and ephemeral storage of the agent's container in a cluster (Kubernetes'
    ``requests``/``limits``); unset means clrk's defaults (docs/cluster.md)."""

    @field_validator("timeout")
    @classmethod
    def _timeout_range(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError(f"expected a positive duration, found {value.total_seconds():g}s")
        if value > MAX_TIMEOUT:
            raise ValueError(
                f"at most {MAX_TIMEOUT_S:g}s (the longest an async invocation may run), "
                f"found {value.total_seconds():g}s"
            )
        return value

    @field_validator("warm_start")
    @classmethod
    def _a_pool_to_start(cls, value: bool, info: ValidationInfo) -> bool:
        warm = info.data.get("warm_pool_size")
        if value and warm == 0:
            raise ValueError(
                "needs spec.warmPoolSize of at least 1, found 0: warm start starts the agent in the "
                "sandboxes kept waiting, and spec.warmPoolSize 0 keeps none"
            )
        return value

    @field_validator("max_concurrency")
    @classmethod
    def _room_for_the_warm_pool(cls, value: int | None, info: ValidationInfo) -> int | None:
        warm = info.data.get("warm_pool_size")
        if value is not None and warm is not None and value < warm:
            raise ValueError(
                f"must be at least spec.warmPoolSize ({warm}), found {value}: each warm pod is a "
                "Knative replica (min-scale), and Knative refuses a max-scale below min-scale"
            )
        return value


MAX_AGENT_NAME = 58
"""``clrk-<name>`` names the agent's ingress Service, and Service names are at most 63 characters."""


def agent_name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a TaskAgent's name, or None: it must be a Kubernetes name,
    and also name Services (``clrk-<name>``), which must start with a letter."""
    if not is_dns_label(name):
        return f"expected {DNS_LABEL_RULE}"
    if len(name) > MAX_AGENT_NAME or not name[0].isalpha():
        return (
            f"a TaskAgent name must start with a letter and have at most {MAX_AGENT_NAME} characters "
            "(it also names Services)"
        )
    return None


class TaskAgent(Resource):
    kind: Literal["TaskAgent"] = "TaskAgent"
    spec: TaskAgentSpec

    @field_validator("metadata")
    @classmethod
    def _service_name(cls, metadata: ObjectMeta) -> ObjectMeta:
        problem = agent_name_problem(metadata.name)
        if problem is not None:
            raise ValueError(f"{problem}, found {metadata.name!r}")
        return metadata

    @property
    def container(self) -> AgentContainer:
        return self.spec.template.spec

    @property
    def env(self) -> dict[str, str]:
        """The manifest's environment for the agent, in order."""
        return {var.name: var.value for var in self.container.env}
