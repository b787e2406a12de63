"""The operator's ``SandboxConfined`` condition against the real API server: it lists a
TaskAgent's pods by Knative's label and reads the shim's report line from their logs.

No kubelet runs in this tier, so the API server cannot serve a pod's log: the operator says so
(Unknown, with the API server's answer) and keeps reconciling. With a log reader fed what the real
``clrk-shim`` writes, the condition follows the pods: False naming the pieces an ABI-3 pod lacks
and its node, True once only a complete pod is left, and ``clrk get`` shows the message meanwhile.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from typing import Any

import pytest
from kopf.testing import KopfRunner

from clrk.cluster import confinement
from clrk.cluster.connecting import Cluster
from clrk.cluster.operating import registry
from tests.support.kube import Kube, eventually, impersonating
from tests.support.shim_logs import shim_start_log

TA = ("clrk.dev/v1alpha1", "TaskAgent")
OPERATOR_USER = "system:serviceaccount:clrk-system:clrk-operator"


def agent(namespace: str, name: str, command: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "clrk.dev/v1alpha1",
        "kind": "TaskAgent",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"template": {"spec": {"image": "example.com/bot:1", "command": command}}},
    }


def _pod(namespace: str, name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"serving.knative.dev/service": "bot"}},
        "spec": {"nodeName": node, "containers": [{"name": "agent", "image": "example.com/bot:1"}]},
    }


def _run(kube: Kube, namespace: str, name: str, node: str) -> None:
    """A pod of the agent on ``node``, Running as a kubelet would report it."""
    kube.apply_raw(_pod(namespace, name, node), manager="test")
    pods = kube.cluster.resource("v1", "Pod")
    pods.status.patch(
        name=name,
        namespace=namespace,
        body={"status": {"phase": "Running"}},
        content_type="application/merge-patch+json",
    )


def _sandbox(kube: Kube, namespace: str) -> dict[str, Any] | None:
    conditions = ((kube.read(*TA, "bot", namespace) or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == confinement.CONDITION), None)


def _with(kube: Kube, namespace: str, status: str, reason: str) -> Any:
    return eventually(
        lambda: (c := _sandbox(kube, namespace)) and c["status"] == status and c["reason"] == reason and c,
        timeout=90,
    )


def test_the_operator_reports_what_the_pods_sandboxes_lack(
    kube: Kube, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    capped, whole = asyncio.run(shim_start_log({"CLRK_LANDLOCK_ABI": "3"})), asyncio.run(shim_start_log())
    monkeypatch.setenv("KUBECONFIG", kube.kubeconfig)
    args = ["run", "--standalone", "--namespace", namespace]
    with KopfRunner(args, registry=registry, timeout=60) as runner:
        kube.apply_raw(agent(namespace, "bot", ["/bin/sh", "-c", "cat"]), manager="kubectl")
        assert _with(kube, namespace, "Unknown", "NoPods")

        # The API server asks the kubelet of the pod's node for its log; none runs here.
        _run(kube, namespace, "bot-a", "n1")
        unreadable = _with(kube, namespace, "Unknown", "LogsUnreadable")
        assert unreadable["message"].startswith("cannot read the sandbox report: pod bot-a: ")
        assert "n1" in unreadable["message"]  # the API server's answer: no such node to ask
        # ... and the operator keeps reconciling: a new spec is compiled and observed.
        changed = agent(namespace, "bot", ["/bin/sh", "-c", "cat; true"])
        kube.apply_raw(changed, manager="kubectl")
        live = eventually(
            lambda: (
                (b := kube.read(*TA, "bot", namespace))
                and b["status"].get("observedGeneration") == b["metadata"]["generation"] == 2
                and b
            )
        )
        assert any(c["type"] == "Ready" for c in live["status"]["conditions"])
        assert _sandbox(kube, namespace) is not None  # the rewrite kept the sandbox condition

        logs = {"bot-a": capped, "bot-b": whole}

        def read(cluster: Cluster, pod_namespace: str, pod: str) -> str:
            assert pod_namespace == namespace
            return logs[pod]

        monkeypatch.setattr(confinement, "read_agent_log", read)
        _run(kube, namespace, "bot-b", "n2")
        lacking = _with(kube, namespace, "False", "LandlockPiecesMissing")
        assert lacking["message"] == (
            "1 of 2 pods runs without net.tcp, fs.ioctl_dev, scope.abstract_unix_socket, scope.signal: "
            "Landlock ABI 3 on node n1"
        )
        shown = kube.clrk("get", "taskagents", "-n", namespace).output
        assert "sandbox: 1 of 2 pods runs without net.tcp" in shown

        kube.cluster.resource("v1", "Pod").delete(name="bot-a", namespace=namespace, grace_period_seconds=0)
        confined = _with(kube, namespace, "True", "Confined")
        assert confined["message"] == "1 of 1 pod confined, no Landlock piece missing"
        assert "sandbox:" not in kube.clrk("get", "taskagents", "-n", namespace).output

    assert runner.exception is None and runner.exit_code == 0, runner.output
    # kopf's aiohttp transports die with the runner's event loop, unclosed: collect them here, where
    # their ResourceWarnings are expected, rather than in whichever test the GC happens to run next.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"unclosed (transport|<socket|event loop)", ResourceWarning)
        gc.collect()


def _allowed(kube: Kube, namespace: str, verb: str, resource: str, subresource: str = "") -> bool:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": OPERATOR_USER,
            "groups": ["system:serviceaccounts", "system:serviceaccounts:clrk-system", "system:authenticated"],
            "resourceAttributes": {
                "namespace": namespace,
                "verb": verb,
                "resource": resource,
                "subresource": subresource,
            },
        },
    }
    answer = kube.cluster.resource("authorization.k8s.io/v1", "SubjectAccessReview").create(body=review)
    return bool(answer.to_dict()["status"].get("allowed"))


def test_the_operators_role_reads_pods_and_their_logs_and_nothing_more(kube: Kube, namespace: str) -> None:
    as_operator = impersonating(kube, OPERATOR_USER)
    _run(kube, namespace, "bot-a", "n1")
    condition = confinement.sandbox_condition(as_operator, namespace, "bot", {}, [])
    # Listed, and the log asked for: what stops it is the missing kubelet, not a 403.
    assert condition["reason"] == "LogsUnreadable", condition
    assert "forbidden" not in condition["message"].lower()
    assert _allowed(kube, namespace, "get", "pods", "log")
    assert not _allowed(kube, namespace, "watch", "pods")
    assert not _allowed(kube, namespace, "create", "pods", "exec")
    assert not _allowed(kube, namespace, "get", "pods", "proxy")
    assert not _allowed(kube, namespace, "delete", "pods")
