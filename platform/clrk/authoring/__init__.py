"""Authoring agents: ``clrk new`` (fork a template) and ``clrk invoke`` (call an agent).

The cores are pure functions beside one small I/O step each: :func:`create_fork` writes a fork,
:func:`send` and :func:`fetch_usage` talk to a running ingress. The CLI adapts them
(:mod:`clrk.cli.authoring`).
"""

from clrk.authoring.invoking import (
    DEFAULT_URL,
    InvocationError,
    InvocationRequest,
    InvocationResult,
    InvokeUsageError,
    TokenUsage,
    agent_ref,
    error_line,
    fetch_usage,
    is_error_body,
    load_data,
    parse_data,
    parse_header,
    send,
    summary,
    token_usage,
)
from clrk.authoring.scaffolding import (
    PLACEHOLDER,
    Fork,
    ScaffoldError,
    check_name,
    clrk_checkout,
    create_fork,
    next_steps,
    render_fork,
)
from clrk.authoring.templates import TemplateFile, available_templates, read_template, templates_dir

__all__ = [
    "DEFAULT_URL",
    "PLACEHOLDER",
    "Fork",
    "InvocationError",
    "InvocationRequest",
    "InvocationResult",
    "InvokeUsageError",
    "ScaffoldError",
    "TemplateFile",
    "TokenUsage",
    "agent_ref",
    "available_templates",
    "check_name",
    "clrk_checkout",
    "create_fork",
    "error_line",
    "fetch_usage",
    "is_error_body",
    "load_data",
    "next_steps",
    "parse_data",
    "parse_header",
    "read_template",
    "render_fork",
    "send",
    "summary",
    "templates_dir",
    "token_usage",
]
