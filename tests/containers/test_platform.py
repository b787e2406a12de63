"""The platform as ``clrk install`` puts it on a cluster, run as written.

``clrk install`` (the real CLI, with the images built here) runs against a real kube-apiserver
listening on the podman network's gateway; each Deployment it applied, read back from that API
server, becomes a pod (tests/support/kubeplay.py says what stands in for kubelet and Knative), with
its Secrets, ConfigMaps, users, capabilities and read-only root filesystem as rendered. The ingress
and the operator reach the API server with their service accounts' tokens, under the RBAC the
install applied.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest

from tests.support.kubeplay import SERVICE_ACCOUNT_DIR
from tests.support.podman import Pod, Pods, podman
from tests.support.stack import Platform, suffix

pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]


def proxy_status(address: str, port: int = 3128) -> int | None:
    """The status the gateway answers to a plain proxied GET with no credentials (None: no answer)."""
    try:
        with socket.create_connection((address, port), timeout=3) as sock:
            sock.sendall(b"GET http://api.anthropic.com/ HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n")
            head = sock.recv(4096).split(b"\r\n", 1)[0].split()
    except OSError:
        return None
    return int(head[1]) if len(head) > 1 else None


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def runs_as_written(pod: Pod, container: str, uid: int) -> None:
    """The container runs as ``uid`` on a read-only root filesystem with no capability left."""
    config = json.loads(podman("inspect", pod.container(container)).stdout)[0]
    assert config["HostConfig"]["ReadonlyRootfs"] is True, pod.report()
    assert config["Config"]["User"] == str(uid), pod.report()
    assert config["EffectiveCaps"] in (None, []), pod.report()


def test_the_egress_gateway_starts_right_after_install(installed: Platform, pods: Pods, tmp_path: Path) -> None:
    """Before any apply: its configuration ConfigMap (empty), CA key and platform key are all
    there; no service-account token is (it has no API rights to use one for)."""
    workload = installed.objects(installed.installed, tmp_path).deployment("clrk-system", "clrk-egress", suffix())
    assert "clrk-egress.clrk-system.svc.cluster.local" in workload.aliases, "agents reach it by its Service"
    pod = installed.play(pods, workload)
    installed.wait_ready(pod, lambda: proxy_status(pod.address()) == 407, "the gateway answers 407 on :3128")
    runs_as_written(pod, "egress", 65532)
    token = podman("exec", pod.container("egress"), "test", "-e", SERVICE_ACCOUNT_DIR, check=False)
    assert token.returncode == 1, f"the gateway's pod holds a service-account token\n{pod.report()}"


def test_the_ingress_starts_under_its_read_only_root(installed: Platform, pods: Pods, tmp_path: Path) -> None:
    """It reads TaskAgents and Callers through the API server at start (and fails to start when it
    cannot), then serves its routing table: every TaskAgent the API server holds."""
    workload = installed.objects(installed.installed, tmp_path).deployment("clrk", "clrk-ingress", suffix())
    pod = installed.play(pods, workload)
    installed.wait_ready(pod, lambda: http_ok(f"http://{pod.address()}:8080/healthz"), "the ingress is healthy")
    runs_as_written(pod, "ingress", 65532)
    held = installed.cluster.resource("clrk.dev/v1alpha1", "TaskAgent").get().to_dict()["items"]
    # It counts the agents it routes and never names them: a caller without a key learns no name.
    assert httpx.get(f"http://{pod.address()}:8080/healthz").json() == {"status": "ok", "agents": len(held)}
    # Installed, it authenticates Callers' keys: without one, no agent is found or denied to exist.
    unknown = httpx.post(f"http://{pod.address()}:8080/", json={}, headers={"X-Clrk-TaskAgent": "default/no-such"})
    assert (unknown.status_code, unknown.json()["error"]["type"]) == (401, "unauthenticated"), unknown.text
    assert f"routing {len(held)} agent(s); auth: keys" in pod.logs("ingress"), "its log says what it serves"


TASK_AGENT = {
    "apiVersion": "clrk.dev/v1alpha1",
    "kind": "TaskAgent",
    "metadata": {"name": "gitops-bot", "namespace": "gitops"},
    "spec": {"template": {"spec": {"image": "registry.example.com/gitops-bot:1", "command": ["cat"]}}},
}


def test_the_operator_starts_and_reconciles_a_task_agent(installed: Platform, pods: Pods, tmp_path: Path) -> None:
    """A TaskAgent applied as kubectl would (no clrk on the client) is compiled by the operator in
    its pod, with the runtime image `clrk install` recorded, and gets its status."""
    workload = installed.objects(installed.installed, tmp_path).deployment("clrk-system", "clrk-operator", suffix())
    pod = installed.play(pods, workload)
    cluster = installed.cluster
    namespaces = cluster.resource("v1", "Namespace")
    namespaces.server_side_apply(
        body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gitops"}}, field_manager="kubectl"
    )
    agents = cluster.resource("clrk.dev/v1alpha1", "TaskAgent")
    agents.server_side_apply(body=TASK_AGENT, field_manager="kubectl", force_conflicts=True)

    def reconciled() -> bool:
        status = (cluster.read(agents, "gitops-bot", "gitops") or {}).get("status") or {}
        return status.get("observedGeneration") == 1

    installed.wait_ready(pod, reconciled, "the operator writes the TaskAgent's status", timeout=120)
    runs_as_written(pod, "operator", 65532)
    service = cluster.read(cluster.resource("serving.knative.dev/v1", "Service"), "gitops-bot", "gitops")
    assert service is not None, pod.report()
    (init,) = service["spec"]["template"]["spec"]["initContainers"]
    assert init["image"] == installed.images["runtime"], "compiled with the runtime image clrk install recorded"
    keys = cluster.read(cluster.resource("v1", "Secret"), "clrk-agent-keys", "gitops")
    assert keys and set(keys["data"]) == {"proxy-token", "request"}, "the operator derives the namespace's keys"
