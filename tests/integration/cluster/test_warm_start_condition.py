"""The operator's ``WarmStarted`` condition against the real API server: for a TaskAgent with
``spec.warmStart`` it lists the pods by Knative's label and reads the shim's warm-start lines from
their logs, every tick.

No kubelet runs in this tier, so the API server cannot serve a pod's log: the operator says so
(Unknown, with the API server's answer). With a log reader fed what the real ``clrk-shim`` writes,
the condition follows the pods: True while warm start is on, False with the shim's reason once a
pod fell back to starting the agent on request, still False after that line scrolled out of the
log's tail, and gone once ``spec.warmStart`` is turned off.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from typing import Any

import pytest
from kopf.testing import KopfRunner

from clrk.cluster import warm_starts
from clrk.cluster.connecting import Cluster
from clrk.cluster.operating import registry
from tests.support.kube import Kube, eventually, impersonating
from tests.support.warm_start_logs import READY_AGENT, warm_start_log

TA = ("clrk.dev/v1alpha1", "TaskAgent")
OPERATOR_USER = "system:serviceaccount:clrk-system:clrk-operator"
FAILING_AGENT = ("/bin/sh", "-c", "echo 'cannot load the model' >&2; exit 3")


def agent(namespace: str, warm_start: bool) -> dict[str, Any]:
    return {
        "apiVersion": "clrk.dev/v1alpha1",
        "kind": "TaskAgent",
        "metadata": {"name": "bot", "namespace": namespace},
        "spec": {
            "template": {"spec": {"image": "example.com/bot:1", "command": ["/bin/sh", "-c", "cat"]}},
            "warmPoolSize": 1,
            "warmStart": warm_start,
        },
    }


def _run(kube: Kube, namespace: str, name: str, node: str) -> None:
    """A pod of the agent on ``node``, Running as a kubelet would report it."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"serving.knative.dev/service": "bot"}},
        "spec": {"nodeName": node, "containers": [{"name": "agent", "image": "example.com/bot:1"}]},
    }
    kube.apply_raw(pod, manager="test")
    kube.cluster.resource("v1", "Pod").status.patch(
        name=name,
        namespace=namespace,
        body={"status": {"phase": "Running"}},
        content_type="application/merge-patch+json",
    )


def _conditions(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    return list(((kube.read(*TA, "bot", namespace) or {}).get("status") or {}).get("conditions") or [])


def _warm(kube: Kube, namespace: str) -> dict[str, Any] | None:
    return next((c for c in _conditions(kube, namespace) if c.get("type") == warm_starts.CONDITION), None)


def _with(kube: Kube, namespace: str, status: str, reason: str, message: str = "") -> Any:
    return eventually(
        lambda: (
            (c := _warm(kube, namespace))
            and (c["status"], c["reason"]) == (status, reason)
            and message in c["message"]
            and c
        ),
        timeout=90,
    )


def test_the_operator_follows_the_pods_warm_start(kube: Kube, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ready, failing = asyncio.run(warm_start_log(*READY_AGENT)), asyncio.run(warm_start_log(*FAILING_AGENT))
    monkeypatch.setenv("KUBECONFIG", kube.kubeconfig)
    args = ["run", "--standalone", "--namespace", namespace]
    with KopfRunner(args, registry=registry, timeout=60) as runner:
        kube.apply_raw(agent(namespace, warm_start=True), manager="kubectl")
        assert _with(kube, namespace, "Unknown", "NoPods")

        # The API server asks the kubelet of the pod's node for its log; none runs here.
        _run(kube, namespace, "bot-a", "n1")
        unreadable = _with(kube, namespace, "Unknown", "LogsUnreadable")
        assert unreadable["message"].startswith("cannot read the warm-start state: pod bot-a: ")

        # bot-a's shim started long ago: its "on" line is in the start of its log only.
        logs = {("bot-a", "head"): ready, ("bot-a", "tail"): "agent output\n" * 3}

        def read(cluster: Cluster, pod_namespace: str, pod: str, part: warm_starts.Part) -> str:
            assert pod_namespace == namespace
            return logs[(pod, part)]

        monkeypatch.setattr(warm_starts, "read_agent_log", read)
        on = _with(kube, namespace, "True", "WarmStartOn")
        assert on["message"] == "warm start on in 1 pod"

        logs[("bot-a", "tail")] = failing
        lost = _with(kube, namespace, "False", "WarmStartFailing", "cannot load the model")
        assert lost["message"].startswith("warm start failing in 1 of 1 pod (the agent starts on request there): ")

        # The failing line scrolls out of bot-a's tail; a second pod comes, on: bot-a stays failing.
        logs[("bot-a", "tail")] = "agent output\n" * 3
        logs[("bot-b", "head")] = logs[("bot-b", "tail")] = ready
        _run(kube, namespace, "bot-b", "n2")
        both = _with(kube, namespace, "False", "WarmStartFailing", "in 1 of 2 pods")
        assert "pod bot-a: " in both["message"] and "cannot load the model" in both["message"]
        assert both["lastTransitionTime"] == lost["lastTransitionTime"]

        kube.cluster.resource("v1", "Pod").delete(name="bot-a", namespace=namespace, grace_period_seconds=0)
        assert _with(kube, namespace, "True", "WarmStartOn", "warm start on in 1 pod")

        # Without spec.warmStart there is nothing to say: the condition goes, the others stay.
        kube.apply_raw(agent(namespace, warm_start=False), manager="kubectl")
        eventually(lambda: _warm(kube, namespace) is None and _conditions(kube, namespace), timeout=90)
        assert {c["type"] for c in _conditions(kube, namespace)} >= {"Ready", "SandboxConfined"}

    assert runner.exception is None and runner.exit_code == 0, runner.output
    # kopf's aiohttp transports die with the runner's event loop, unclosed: collect them here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"unclosed (transport|<socket|event loop)", ResourceWarning)
        gc.collect()


def test_the_operators_role_reads_the_logs_tail(kube: Kube, namespace: str) -> None:
    as_operator = impersonating(kube, OPERATOR_USER)
    _run(kube, namespace, "bot-a", "n1")
    condition = warm_starts.warm_start_condition(as_operator, namespace, "bot", {}, [])
    # Listed, and the log's tail asked for: what stops it is the missing kubelet, not a 403.
    assert condition["reason"] == "LogsUnreadable", condition
    assert "forbidden" not in condition["message"].lower()
