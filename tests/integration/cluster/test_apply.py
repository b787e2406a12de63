"""`clrk apply`, `get`, `delete` against a real API server."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from clrk.cluster import connect
from clrk.cluster.routing import refresh
from clrk.errors import ClusterError
from clrk.ingress import CallerKeys, HttpForwarder, IngressSettings, create_app
from clrk.manifests.compiling import ingress_service_name
from clrk.manifests.documents import dump_all, load_all
from clrk_runtime.protocol.keys import schedule_token
from tests.support.kube import Kube, cli_app, platform_key, write_agent

KSVC = ("serving.knative.dev/v1", "Service")
TA = ("clrk.dev/v1alpha1", "TaskAgent")


def test_apply_creates_agent_and_what_it_compiles_to(kube: Kube, namespace: str, tmp_path: Path) -> None:
    path = write_agent(tmp_path, namespace)
    out = kube.clrk("apply", "-f", str(path)).output
    assert f"taskagent.clrk.dev {namespace}/bot created" in out
    agent = kube.read(*TA, "bot", namespace)
    ksvc = kube.read(*KSVC, "bot", namespace)
    assert agent and ksvc
    (ref,) = ksvc["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
        "TaskAgent",
        "bot",
        agent["metadata"]["uid"],
        True,
    )
    labels = ksvc["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "clrk" and labels["clrk.dev/apply-set"].startswith("p-")
    caller_side = kube.read("v1", "Service", ingress_service_name(namespace, "bot"), "clrk")
    assert caller_side and caller_side["metadata"]["labels"]["clrk.dev/owner"] == f"TaskAgent.{namespace}.bot"
    assert "ownerReferences" not in caller_side["metadata"]
    assert kube.read("v1", "ConfigMap", f"agent.{namespace}.bot", "clrk-system")
    merged = kube.read("v1", "ConfigMap", "clrk-egress-config", "clrk-system")
    assert merged and f'"{namespace}/bot"' in merged["data"]["config.json"]
    ca = kube.read("v1", "ConfigMap", "clrk-ca", namespace)
    assert ca and "BEGIN CERTIFICATE" in ca["data"]["ca-bundle.crt"]
    keys = kube.read("v1", "Secret", "clrk-agent-keys", namespace)
    assert keys and set(keys["data"]) == {"proxy-token", "request"}
    assert kube.read("v1", "Secret", "clrk-egress-token", namespace) is None, "the platform key is not copied"
    assert kube.read("networking.k8s.io/v1", "NetworkPolicy", "clrk-agents", namespace)


def test_reapply_is_a_no_op(kube: Kube, namespace: str, tmp_path: Path) -> None:
    path = write_agent(tmp_path, namespace)
    kube.clrk("apply", "-f", str(path))
    before = {kind: kube.read(*kind, "bot", namespace)["metadata"]["resourceVersion"] for kind in (TA, KSVC)}  # type: ignore[index]
    time.sleep(1.1)  # managedFields times have 1 s resolution: make a stored no-op visible
    out = kube.clrk("apply", "-f", str(path)).output
    after = {kind: kube.read(*kind, "bot", namespace)["metadata"]["resourceVersion"] for kind in (TA, KSVC)}  # type: ignore[index]
    assert before == after
    assert "configured" not in out and "created" not in out, out


def test_image_change_updates_the_template(kube: Kube, namespace: str, tmp_path: Path) -> None:
    kube.clrk("apply", "-f", str(write_agent(tmp_path, namespace, image="example.com/bot:1")))
    out = kube.clrk("apply", "-f", str(write_agent(tmp_path, namespace, image="example.com/bot:2"))).output
    assert f"service.serving.knative.dev {namespace}/bot configured" in out
    ksvc = kube.read(*KSVC, "bot", namespace)
    assert ksvc and ksvc["spec"]["template"]["spec"]["containers"][0]["image"] == "example.com/bot:2"


def test_prune_removes_what_left_the_manifests(kube: Kube, namespace: str, tmp_path: Path) -> None:
    write_agent(tmp_path / "m", namespace, "one")
    gone = write_agent(tmp_path / "m", namespace, "two")
    kube.clrk("apply", "-f", str(tmp_path / "m"), "--apply-set", namespace)
    gone.unlink()
    out = kube.clrk("apply", "-f", str(tmp_path / "m"), "--apply-set", namespace, "--prune").output
    assert f"taskagent.clrk.dev {namespace}/two pruned" in out
    assert kube.read(*TA, "two", namespace) is None and kube.read(*KSVC, "two", namespace) is None
    assert kube.read("v1", "Service", ingress_service_name(namespace, "two"), "clrk") is None
    assert kube.read("v1", "ConfigMap", f"agent.{namespace}.two", "clrk-system") is None
    merged = kube.read("v1", "ConfigMap", "clrk-egress-config", "clrk-system")
    assert merged and f'"{namespace}/two"' not in merged["data"]["config.json"]
    assert f'"{namespace}/one"' in merged["data"]["config.json"]
    assert kube.read(*TA, "one", namespace) and kube.read(*KSVC, "one", namespace)


def test_a_conflicting_field_manager_is_reported(kube: Kube, namespace: str, tmp_path: Path) -> None:
    path = write_agent(tmp_path, namespace)
    kube.clrk("apply", "-f", str(path))
    ksvc = kube.read(*KSVC, "bot", namespace)
    assert ksvc
    template = ksvc["spec"]["template"]
    template["spec"]["containers"][0]["image"] = "example.com/hijacked:1"
    body = {**{k: ksvc[k] for k in ("apiVersion", "kind")}, "metadata": {"name": "bot", "namespace": namespace}}
    kube.apply_raw({**body, "spec": {"template": template}}, manager="someone-else", force=True)
    result = kube.clrk("apply", "-f", str(write_agent(tmp_path, namespace, image="example.com/bot:2")), ok=False)
    assert isinstance(result.exception, ClusterError)
    message = str(result.exception)
    assert "someone-else" in message and "--force-conflicts" in message and ".spec.template.spec.containers" in message
    assert str(path) in message and f"Service {namespace}/bot" in message
    kube.clrk("apply", "-f", str(path), "--force-conflicts")
    ksvc = kube.read(*KSVC, "bot", namespace)
    assert ksvc and ksvc["spec"]["template"]["spec"]["containers"][0]["image"] == "example.com/bot:2"


@pytest.mark.parametrize("mode", ["client", "server"])
def test_dry_run_changes_nothing(kube: Kube, namespace: str, tmp_path: Path, mode: str) -> None:
    out = kube.clrk("apply", "-f", str(write_agent(tmp_path, namespace)), f"--dry-run={mode}").output
    assert "dry run" in out
    assert kube.read(*TA, "bot", namespace) is None and kube.read(*KSVC, "bot", namespace) is None
    assert kube.read("v1", "ConfigMap", "clrk-ca", namespace) is None


def test_server_side_rejection_is_shown(kube: Kube, namespace: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Not_A_Name", "namespace": namespace}}
    path.write_text(dump_all([bad]))
    result = kube.clrk("apply", "-f", str(path), ok=False)
    assert isinstance(result.exception, ClusterError)
    message = str(result.exception)
    assert message.startswith(f"{path}: ConfigMap {namespace}/Not_A_Name: rejected by the cluster:"), message
    assert "RFC 1123" in message


def test_get_and_delete(kube: Kube, namespace: str, tmp_path: Path) -> None:
    path = write_agent(tmp_path, namespace)
    kube.clrk("apply", "-f", str(path))
    table = kube.clrk("get", "taskagents", "-n", namespace).output
    assert table.splitlines()[0].split() == ["NAME", "READY", "URL", "IMAGE", "REASON"]
    assert table.splitlines()[1].split()[:4] == ["bot", "Unknown", "-", "example.com/bot:1"]
    everywhere = kube.clrk("get", "ta", "-A").output
    assert everywhere.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert any(line.split()[:2] == [namespace, "bot"] for line in everywhere.splitlines())
    out = kube.clrk("delete", "-f", str(path)).output
    assert f"taskagent.clrk.dev {namespace}/bot deleted" in out
    assert kube.read(*TA, "bot", namespace) is None and kube.read(*KSVC, "bot", namespace) is None
    assert kube.read("v1", "Service", ingress_service_name(namespace, "bot"), "clrk") is None
    assert "No TaskAgents found." in kube.clrk("get", "ta", "-n", namespace).output


def test_install_is_idempotent_and_sets_knative_flags(kube: Kube) -> None:
    ca = kube.read("v1", "ConfigMap", "clrk-ca", "clrk-system")
    kube.clrk("install")
    assert kube.read("v1", "ConfigMap", "clrk-ca", "clrk-system") == ca, "the CA is kept, never rotated"
    features = kube.read("v1", "ConfigMap", "config-features", "knative-serving")
    assert features and features["data"]["kubernetes.podspec-init-containers"] == "enabled"
    assert features["data"]["_example"] == "see knative docs", "Knative's own keys stay"
    ingress = kube.read("apps/v1", "Deployment", "clrk-ingress", "clrk")
    assert ingress and ingress["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "clrk-ingress"


def test_unreachable_cluster_says_so(tmp_path: Path, kube: Kube) -> None:
    config = load_all(Path(kube.kubeconfig).read_text())[0]
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    path = tmp_path / "kubeconfig"
    path.write_text(dump_all([config]))
    failed = CliRunner().invoke(cli_app(), ["get", "ta", "--kubeconfig", str(path)])
    assert isinstance(failed.exception, ClusterError)
    assert "cannot reach the cluster at https://127.0.0.1:1" in str(failed.exception)


def test_missing_kubeconfig_says_how_to_get_one(tmp_path: Path) -> None:
    failed = CliRunner().invoke(cli_app(), ["get", "ta", "--kubeconfig", str(tmp_path / "nope")])
    assert isinstance(failed.exception, ClusterError)
    assert "no usable kubeconfig" in str(failed.exception) and "--kubeconfig" in str(failed.exception)


def test_wait_reports_progress_and_prints_the_url(kube: Kube, namespace: str, tmp_path: Path) -> None:
    path = write_agent(tmp_path, namespace)
    kube.clrk("apply", "-f", str(path))
    ksvc = kube.read(*KSVC, "bot", namespace)
    assert ksvc
    # Play Knative's controller: mark the Service Ready, as it would once the pods are up.
    status = {
        "observedGeneration": ksvc["metadata"]["generation"],
        "url": f"http://bot.{namespace}.example.com",
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    resource = kube.cluster.resource(*KSVC)
    resource.status.patch(
        body={"status": status}, name="bot", namespace=namespace, content_type="application/merge-patch+json"
    )
    out = kube.clrk("apply", "-f", str(path), "--wait", "--timeout", "5").output
    assert f"{namespace}/bot ready: http://bot.{namespace}.example.com" in out


def test_wait_gives_up_saying_why(kube: Kube, namespace: str, tmp_path: Path) -> None:
    result = kube.clrk("apply", "-f", str(write_agent(tmp_path, namespace)), "--wait", "--timeout", "1", ok=False)
    assert isinstance(result.exception, ClusterError)
    assert f"not ready after 1s: {namespace}/bot" in str(result.exception)
    assert f"{namespace}/bot waiting:" in result.output


SCHEDULE = """\
---
apiVersion: clrk.dev/v1alpha1
kind: TaskSchedule
metadata:
  name: nightly
  namespace: {namespace}
spec:
  agent: bot
  schedule: "0 3 * * *"
  data: {{"report": true}}
"""


def test_schedules_become_owned_ping_sources(kube: Kube, namespace: str, tmp_path: Path) -> None:
    path = write_agent(tmp_path, namespace)
    path.write_text(path.read_text() + SCHEDULE.format(namespace=namespace))
    kube.clrk("apply", "-f", str(path))
    ping = kube.read("sources.knative.dev/v1", "PingSource", "nightly", namespace)
    schedule = kube.read("clrk.dev/v1alpha1", "TaskSchedule", "nightly", namespace)
    assert ping and schedule
    assert ping["metadata"]["ownerReferences"][0]["uid"] == schedule["metadata"]["uid"]
    # Agent pods refuse what the ingress did not sign, and a PingSource sends no header of its
    # own: it posts to the ingress, with the token the installed platform key makes for "bot".
    token = schedule_token(platform_key(kube), namespace, "bot")
    assert ping["spec"]["sink"] == {
        "uri": f"http://clrk-ingress.clrk.svc.cluster.local/_clrk/schedules/{namespace}/bot/{token}"
    }
    assert "TOKEN-FILLED-IN-AT-APPLY" not in str(kube.clrk("apply", "-f", str(path)).output)
    again = kube.read("sources.knative.dev/v1", "PingSource", "nightly", namespace)
    assert again and again["metadata"]["resourceVersion"] == ping["metadata"]["resourceVersion"], "re-apply: no-op"


async def test_the_stored_sink_url_is_what_the_ingress_lets_in(kube: Kube, namespace: str, tmp_path: Path) -> None:
    """The ingress as `clrk ingress` builds it (tables from the API server, the installed platform
    key) takes the stored sink URL's path and tries the agent; a token changed by one character,
    or moved to another agent, gets 404."""
    path = write_agent(tmp_path, namespace)
    path.write_text(path.read_text() + SCHEDULE.format(namespace=namespace))
    kube.clrk("apply", "-f", str(path))
    ping = kube.read("sources.knative.dev/v1", "PingSource", "nightly", namespace)
    assert ping
    sink = httpx.URL(ping["spec"]["sink"]["uri"])
    key = platform_key(kube)
    forwarder, callers = HttpForwarder({}, "cluster.local", key), CallerKeys()
    refresh(connect(kube.kubeconfig), forwarder, callers)
    app = create_app(forwarder, callers, IngressSettings(host="0.0.0.0"), schedule_key=key)
    event = {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": "a1",
        "ce-source": f"/apis/v1/namespaces/{namespace}/pingsources/nightly",
        "ce-type": "dev.knative.sources.ping",
    }
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress") as client:
        # No Knative here: the agent's address does not resolve, so a let-in run ends in 503.
        let_in = await client.post(sink.path, headers=event, content=b'{"report":true}')
        assert (let_in.status_code, let_in.json()["error"]["type"]) == (503, "agent_unavailable"), let_in.text
        prefix, token = sink.path.rsplit("/", 1)
        tampered = f"{prefix}/{token[:-1]}{'A' if token[-1] != 'A' else 'B'}"
        elsewhere = sink.path.replace(f"/{namespace}/bot/", f"/{namespace}/other/")
        for wrong in (tampered, elsewhere):
            refused = await client.post(wrong, headers=event, content=b'{"report":true}')
            assert (refused.status_code, refused.json()["error"]["type"]) == (404, "unknown_schedule"), wrong
    await forwarder.aclose()


def test_unknown_kinds_say_what_to_install(kube: Kube, namespace: str, tmp_path: Path) -> None:
    path = tmp_path / "widget.yaml"
    path.write_text(f"apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: w, namespace: {namespace}}}\n")
    result = kube.clrk("apply", "-f", str(path), ok=False)
    assert isinstance(result.exception, ClusterError)
    assert "has no Widget (example.com/v1): install the CRD" in str(result.exception)


def test_logs_without_pods_explains_scale_to_zero(kube: Kube, namespace: str) -> None:
    result = kube.clrk("logs", "bot", "-n", namespace, ok=False)
    assert isinstance(result.exception, ClusterError)
    assert f"no pods serve TaskAgent {namespace}/bot" in str(result.exception)
    assert "warmPoolSize" in str(result.exception)


def test_missing_namespace_is_named(kube: Kube, tmp_path: Path) -> None:
    result = kube.clrk("apply", "-f", str(write_agent(tmp_path, "no-such-ns")), ok=False)
    assert isinstance(result.exception, ClusterError)
    assert "`kubectl create namespace no-such-ns`" in str(result.exception)
