"""`clrk install` for async invocations, judged by a real API server holding Knative's own Broker and
Trigger CRDs: the Broker and Trigger stored as rendered (delivery timeout and dead letter kept),
Redis and its fence, its password made once and copied for the ingress only, Knative Serving's
longest revision timeout raised so that a long agent deploys; the ingress given no new API right."""

from __future__ import annotations

import base64
from pathlib import Path

from clrk.cluster.configs import install_objects
from clrk.errors import ClusterError
from clrk.manifests.compiling import KNATIVE_MAX_TIMEOUT_S, KNATIVE_TIMEOUT_MARGIN_S
from tests.support.kube import Kube, eventually, impersonating, write_agent

INGRESS_USER = "system:serviceaccount:clrk:clrk-ingress"


def _rendered(kind: str, name: str) -> dict[str, object]:
    (body,) = [o for o in install_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    return body


def test_the_broker_and_trigger_are_stored_as_rendered(kube: Kube) -> None:
    for kind in ("Broker", "Trigger"):
        stored = kube.read("eventing.knative.dev/v1", kind, "clrk-invocations", "clrk")
        assert stored, f"{kind} clrk/clrk-invocations was not installed"
        # Nothing pruned: `delivery.timeout` lives under x-kubernetes-preserve-unknown-fields.
        assert stored["spec"] == _rendered(kind, "clrk-invocations")["spec"], kind
    trigger = kube.read("eventing.knative.dev/v1", "Trigger", "clrk-invocations", "clrk")
    assert trigger and trigger["spec"]["delivery"]["timeout"] == "PT1H2M"
    assert trigger["spec"]["delivery"]["deadLetterSink"]["uri"] == "/_clrk/runs/dead-letter"


def test_redis_runs_behind_a_password_made_once_and_a_fence(kube: Kube) -> None:
    assert kube.read("apps/v1", "Deployment", "clrk-redis", "clrk-system")
    assert kube.read("v1", "Service", "clrk-redis", "clrk-system")
    assert kube.read("networking.k8s.io/v1", "NetworkPolicy", "clrk-redis", "clrk-system")
    original = kube.read("v1", "Secret", "clrk-redis", "clrk-system")
    assert original
    password = base64.b64decode(original["data"]["password"]).decode()
    assert len(password) == 64
    assert base64.b64decode(original["data"]["auth.conf"]).decode() == f"requirepass {password}\n"
    copy = kube.read("v1", "Secret", "clrk-redis", "clrk")
    assert copy and copy["data"] == {"password": original["data"]["password"]}, "the ingress gets the password only"
    kube.clrk("install")
    again = kube.read("v1", "Secret", "clrk-redis", "clrk-system")
    assert again and again["data"] == original["data"], "re-installing keeps the password (running pods hold it)"


def test_knative_serving_takes_an_agent_that_runs_for_half_an_hour(kube: Kube, namespace: str, tmp_path: Path) -> None:
    defaults = kube.read("v1", "ConfigMap", "config-defaults", "knative-serving")
    assert defaults
    assert defaults["data"]["max-revision-timeout-seconds"] == str(KNATIVE_MAX_TIMEOUT_S)
    assert defaults["data"]["_example"] == "see knative docs", "Knative's own keys stay"
    managers = {m["manager"] for m in defaults["metadata"]["managedFields"]}
    assert "clrk" in managers
    path = write_agent(tmp_path, namespace)
    path.write_text(path.read_text() + "  timeout: 30m\n")
    kube.clrk("apply", "-f", str(path))
    ksvc = kube.read("serving.knative.dev/v1", "Service", "bot", namespace)
    assert ksvc and ksvc["spec"]["template"]["spec"]["timeoutSeconds"] == 1800 + KNATIVE_TIMEOUT_MARGIN_S


def test_the_ingress_reads_no_redis_secret_through_the_api(kube: Kube) -> None:
    """It mounts its copy; its service account may not read either through the API server."""
    ingress = impersonating(kube, INGRESS_USER)

    def refused(namespace: str) -> bool:
        try:
            ingress.read(ingress.resource("v1", "Secret"), "clrk-redis", namespace)
        except ClusterError as exc:
            return "not allowed" in str(exc) or "forbidden" in str(exc).lower()
        return False

    # The authorizer learns new bindings on its own time: wait until it answers at all.
    assert eventually(lambda: refused("clrk") and refused("clrk-system"))
