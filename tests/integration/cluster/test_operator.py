"""The operator reconciles TaskAgents and TaskSchedules applied by another tool, against the real
API server."""

from __future__ import annotations

import gc
import warnings
from typing import Any

import pytest
from kopf.testing import KopfRunner

from clrk.cluster.operating import registry
from clrk.manifests.compiling import ingress_service_name
from clrk_runtime.protocol.keys import schedule_token
from tests.support.kube import Kube, eventually, platform_key

TA = ("clrk.dev/v1alpha1", "TaskAgent")
TS = ("clrk.dev/v1alpha1", "TaskSchedule")
PING = ("sources.knative.dev/v1", "PingSource")


def agent(namespace: str, name: str, command: list[str] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"image": "example.com/bot:1", **({"command": command} if command else {})}
    return {
        "apiVersion": "clrk.dev/v1alpha1",
        "kind": "TaskAgent",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"template": {"spec": spec}},
    }


def test_operator_reconciles_a_kubectl_applied_agent(
    kube: Kube, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", kube.kubeconfig)
    args = ["run", "--standalone", "--namespace", namespace]
    with KopfRunner(args, registry=registry, timeout=60) as runner:
        kube.apply_raw(agent(namespace, "bot", ["/bin/sh", "-c", "cat"]), manager="kubectl")
        kube.apply_raw(agent(namespace, "nocmd", None), manager="kubectl")

        ksvc = eventually(lambda: kube.read("serving.knative.dev/v1", "Service", "bot", namespace))
        live = kube.read(*TA, "bot", namespace)
        assert live and ksvc["metadata"]["ownerReferences"][0]["uid"] == live["metadata"]["uid"]
        assert ksvc["metadata"]["labels"]["clrk.dev/apply-set"] == "gitops"
        # The operator applies its objects one by one: the Knative Service may come first.
        assert eventually(lambda: kube.read("v1", "Service", ingress_service_name(namespace, "bot"), "clrk"))
        assert eventually(lambda: kube.read("v1", "ConfigMap", "clrk-ca", namespace))

        status = eventually(lambda: (kube.read(*TA, "bot", namespace) or {}).get("status", {}).get("conditions"))
        live = kube.read(*TA, "bot", namespace)
        assert live and live["status"]["observedGeneration"] == live["metadata"]["generation"]
        assert status[0]["type"] == "Ready" and status[0]["status"] == "Unknown"  # no Knative controller here

        bad = eventually(lambda: (kube.read(*TA, "nocmd", namespace) or {}).get("status", {}).get("conditions"))
        assert bad[0]["status"] == "False" and bad[0]["reason"] == "InvalidSpec"
        assert "spec.template.spec.command" in bad[0]["message"] and "required" in bad[0]["message"]
        assert kube.read("serving.knative.dev/v1", "Service", "nocmd", namespace) is None

        # A policy applied with kubectl reaches the gateway's merged configuration.
        policy = {
            "apiVersion": "clrk.dev/v1alpha1",
            "kind": "CredentialInjectionPolicy",
            "metadata": {"name": "anthropic", "namespace": namespace},
            "spec": {"host": "api.anthropic.com", "header": "x-api-key", "secretKeyRef": {"name": "s", "key": "k"}},
        }
        kube.apply_raw(policy, manager="kubectl")

        def merged() -> str:
            body = kube.read("v1", "ConfigMap", "clrk-egress-config", "clrk-system") or {"data": {}}
            return str(body["data"].get("config.json", ""))

        eventually(lambda: kube.read("v1", "ConfigMap", f"policy.{namespace}.anthropic", "clrk-system"))
        eventually(lambda: "api.anthropic.com" in merged() and f'"{namespace}/bot"' in merged())

        # Deleting the agent removes what lives in other namespaces (a finalizer; no GC runs here).
        kube.cluster.resource(*TA).delete(name="bot", namespace=namespace)
        eventually(lambda: kube.read("v1", "Service", ingress_service_name(namespace, "bot"), "clrk") is None)
        eventually(lambda: kube.read(*TA, "bot", namespace) is None)
        assert kube.read("v1", "ConfigMap", f"agent.{namespace}.bot", "clrk-system") is None
    assert runner.exception is None and runner.exit_code == 0
    # kopf's aiohttp transports die with the runner's event loop, unclosed: collect them here, where
    # their ResourceWarnings are expected, rather than in whichever test the GC happens to run next.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"unclosed (transport|<socket|event loop)", ResourceWarning)
        gc.collect()


def schedule(namespace: str, name: str, cron: str) -> dict[str, Any]:
    return {
        "apiVersion": "clrk.dev/v1alpha1",
        "kind": "TaskSchedule",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"agent": "bot", "schedule": cron, "data": {"report": True}},
    }


def test_operator_reconciles_a_kubectl_applied_schedule(
    kube: Kube, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", kube.kubeconfig)
    args = ["run", "--standalone", "--namespace", namespace]
    with KopfRunner(args, registry=registry, timeout=60) as runner:
        kube.apply_raw(schedule(namespace, "morning", "CRON_TZ=Europe/Paris 30 7 * * mon-fri"), manager="kubectl")
        kube.apply_raw(schedule(namespace, "never", "0 3 * * 7"), manager="kubectl")

        ping = eventually(lambda: kube.read(*PING, "morning", namespace))
        live = kube.read(*TS, "morning", namespace)
        assert live and ping["metadata"]["ownerReferences"][0]["uid"] == live["metadata"]["uid"]
        assert (ping["spec"]["schedule"], ping["spec"]["timezone"]) == ("30 7 * * mon-fri", "Europe/Paris")
        assert ping["spec"]["data"] == '{"report":true}'
        # To the ingress, with the token the installed platform key makes for this agent alone.
        token = schedule_token(platform_key(kube), namespace, "bot")
        assert ping["spec"]["sink"] == {
            "uri": f"http://clrk-ingress.clrk.svc.cluster.local/_clrk/schedules/{namespace}/bot/{token}"
        }
        assert ping["metadata"]["labels"]["clrk.dev/apply-set"] == "gitops"
        status = eventually(lambda: (kube.read(*TS, "morning", namespace) or {}).get("status", {}).get("conditions"))
        assert status[0]["type"] == "Ready" and status[0]["status"] == "Unknown"  # no Eventing controller here

        bad = eventually(lambda: (kube.read(*TS, "never", namespace) or {}).get("status", {}).get("conditions"))
        assert bad[0]["status"] == "False" and bad[0]["reason"] == "InvalidSpec"
        assert "spec.schedule" in bad[0]["message"] and "above 6" in bad[0]["message"]
        assert kube.read(*PING, "never", namespace) is None

        # A change follows: the PingSource is re-applied.
        kube.apply_raw(schedule(namespace, "morning", "@hourly"), manager="kubectl")
        eventually(lambda: (kube.read(*PING, "morning", namespace) or {}).get("spec", {}).get("schedule") == "@hourly")
    assert runner.exception is None and runner.exit_code == 0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"unclosed (transport|<socket|event loop)", ResourceWarning)
        gc.collect()
