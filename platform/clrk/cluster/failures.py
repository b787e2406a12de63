"""What to tell a user when the cluster says no. Pure: API status bodies in, one line out."""

from __future__ import annotations

import json
import re
from typing import Any

from clrk.errors import ClusterError

__all__ = ["Conflict", "api_failure", "conflicts", "missing_kind"]

_KNATIVE_INSTALL = "https://knative.dev/docs/install/yaml-install/"
_MANAGER = re.compile(r'conflict with "([^"]+)"')


def missing_kind(api_version: str, kind: str, context: str) -> str:
    """Why ``kind`` is unknown to the cluster, and what to install to get it."""
    group = api_version.split("/")[0] if "/" in api_version else ""
    where = f"the cluster (context {context!r}) has no {kind} ({api_version})"
    if group == "clrk.dev":
        return f"{where}: clrk's CRDs are not installed; run `clrk install`"
    if group == "serving.knative.dev":
        return f"{where}: Knative Serving is not installed; see {_KNATIVE_INSTALL} (or hack/kind-up.sh)"
    if group in ("sources.knative.dev", "eventing.knative.dev"):
        return f"{where}: Knative Eventing is not installed (TaskSchedules need it); see {_KNATIVE_INSTALL}"
    return f"{where}: install the CRD or controller that provides it first"


def _status(body: Any) -> dict[str, Any]:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return {"message": body.strip()}
    return body if isinstance(body, dict) else {}


class Conflict:
    """One field another manager owns: ``.spec.template.spec.containers`` held by ``kubectl``."""

    def __init__(self, field: str, manager: str) -> None:
        self.field, self.manager = field, manager

    def __repr__(self) -> str:
        return f"Conflict({self.field!r}, {self.manager!r})"


def conflicts(body: Any) -> list[Conflict]:
    """The fields of a server-side apply 409, with the manager that holds each."""
    out = []
    for cause in _status(body).get("details", {}).get("causes", []) or []:
        match = _MANAGER.search(str(cause.get("message", "")))
        out.append(Conflict(str(cause.get("field", "?")), match.group(1) if match else "another manager"))
    return out


def api_failure(status: int | None, body: Any, what: str = "", source: str = "") -> ClusterError:
    """The ClusterError for an API refusal of ``what`` (``Kind ns/name``) from manifest ``source``."""
    parsed = _status(body)
    message = str(parsed.get("message") or parsed.get("reason") or f"HTTP {status}")
    prefix = ": ".join(part for part in (source, what) if part)
    prefix = f"{prefix}: " if prefix else ""
    if status == 409 and (found := conflicts(parsed)):
        by_manager: dict[str, list[str]] = {}
        for conflict in found:
            by_manager.setdefault(conflict.manager, []).append(conflict.field)
        held = "; ".join(f"{', '.join(fields)} (managed by {manager!r})" for manager, fields in by_manager.items())
        return ClusterError(
            f"{prefix}conflict: {held}; rerun with --force-conflicts to take these fields over, "
            "or remove them from the other tool's configuration"
        )
    if status in (401, 403):
        return ClusterError(f"{prefix}not allowed: {message}; check the user of your kubeconfig context")
    if status == 404 and parsed.get("details", {}).get("kind") == "namespaces":
        name = parsed["details"].get("name", "?")
        return ClusterError(f"{prefix}namespace {name!r} does not exist: `kubectl create namespace {name}`")
    return ClusterError(f"{prefix}rejected by the cluster: {message}")
