"""What the cluster does to a pod spec that no API server in this tier runs: the Pod Security
Standards' checks (Kubernetes' pod-security-admission, ``policy/check_*.go``), Knative's
``secure-pod-defaults`` (``RevisionSpec.defaultSecurityContext``) and kubelet's refusal of a root
container that must not run as root. Written from those sources, for the checks a clrk pod can
trip; the tests that use them assert what a real cluster would decide."""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["lowest_level", "pss_violations", "root_refused_by_kubelet", "secure_pod_defaults"]

LEVELS = ("privileged", "baseline", "restricted")

# check_capabilities_baseline.go
_BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip
# check_restrictedVolumes.go
_RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod.get("containers", []), *pod.get("ephemeralContainers", [])]


def _baseline(pod: dict[str, Any]) -> list[str]:
    out = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            out.append(f"host namespaces: {key}")
    for volume in pod.get("volumes", []):
        if "hostPath" in volume:
            out.append(f"hostPath volume {volume['name']}")
    pod_seccomp = ((pod.get("securityContext") or {}).get("seccompProfile") or {}).get("type")
    if pod_seccomp == "Unconfined":
        out.append("pod seccompProfile Unconfined")
    for c in _containers(pod):
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"{c['name']}: privileged")
        extra = set((sc.get("capabilities") or {}).get("add") or []) - _BASELINE_CAPABILITIES
        if extra:
            out.append(f"{c['name']}: non-default capabilities {sorted(extra)}")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            out.append(f"{c['name']}: hostPort")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            out.append(f"{c['name']}: seccompProfile Unconfined")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{c['name']}: procMount")
    return out


def _restricted(pod: dict[str, Any]) -> list[str]:
    out = []
    psc = pod.get("securityContext") or {}
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= _RESTRICTED_VOLUMES:
            out.append(f"restricted volume types: {volume['name']}")
    for c in _containers(pod):
        sc = c.get("securityContext") or {}
        name = c["name"]
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation != false")
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if non_root is not True:
            out.append(f"{name}: runAsNonRoot != true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f"{name}: runAsUser=0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name}: capabilities not dropping ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: capabilities added beyond NET_BIND_SERVICE")
    return out


def pss_violations(pod: dict[str, Any], level: str) -> list[str]:
    """Why the Pod Security Standard ``level`` refuses the pod spec ``pod`` (empty: it admits it)."""
    assert level in LEVELS
    if level == "privileged":
        return []
    return _baseline(pod) + (_restricted(pod) if level == "restricted" else [])


def lowest_level(pod: dict[str, Any]) -> str:
    """The lowest (most restrictive) Pod Security Standard that admits ``pod``."""
    return next(level for level in reversed(LEVELS) if not pss_violations(pod, level))


def secure_pod_defaults(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod spec after Knative's defaulting with ``secure-pod-defaults: enabled``."""
    out = copy.deepcopy(pod)
    psc = out.get("securityContext") or {}
    for c in [*out.get("containers", []), *out.get("initContainers", [])]:
        sc = dict(c.get("securityContext") or {})
        sc.setdefault("allowPrivilegeEscalation", False)
        if not (psc.get("seccompProfile") or {}).get("type"):
            sc.setdefault("seccompProfile", {"type": "RuntimeDefault"})
        if "capabilities" not in sc:
            sc["capabilities"] = {"drop": ["ALL"]}
        if psc.get("runAsNonRoot") is None and sc.get("runAsNonRoot") is None:
            sc["runAsNonRoot"] = True
        c["securityContext"] = sc
    return out


def root_refused_by_kubelet(pod: dict[str, Any]) -> list[str]:
    """Containers kubelet refuses to start: ``runAsNonRoot: true`` with uid 0 (``runAsUser: 0``)."""
    psc = pod.get("securityContext") or {}
    refused = []
    for c in [*pod.get("initContainers", []), *pod.get("containers", [])]:
        sc = c.get("securityContext") or {}
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if non_root and sc.get("runAsUser", psc.get("runAsUser")) == 0:
            refused.append(c["name"])
    return refused
