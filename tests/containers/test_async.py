"""Async invocations as a cluster runs them, through containers.

caller (this test) → an ingress pod (202) → Redis (a pod) and the Broker → the Trigger's delivery
to an ingress pod's ``/_clrk/runs`` → the agent's pod (the runtime copied in by its init
container, as compiled) → the result, read through any ingress pod. ``clrk install`` and
``clrk apply`` (the real CLI) against a real kube-apiserver; the objects it holds become pods
(tests/support/kubeplay.py): Redis from the rendered Deployment, TWO ingress pods from the
rendered ingress Deployment (as its ReplicaSet would make them), one agent pod.

Stand-ins, each named where it is made: Knative Eventing's broker (broker-ingress and the Trigger's
delivery: retries with backoff, a dead letter) is :class:`tests.support.broker.BrokerStandIn`, an
HTTP server in this test on the podman network's gateway (the ingress pods are pointed at it: the
rendered URL names broker-ingress, which does not run here), delivering to the two pods as the
Service's endpoints; the image ``redis:7.4-alpine`` is Debian's redis-server built here
(tests/containers/redis.Dockerfile); each ingress pod's run lease is 3 s rather than 15 s (its
``CLRK_INGRESS_RUN_LEASE_SECONDS``), so that a dead pod's run is taken over sooner.

The agent (in jq-bot's image: bash and jq) prints ``first``, waits, when its data asks, for a
file named after its invocation id in a folder of the host mounted into its pod (the test makes
it once it saw the run under way), prints ``second`` and its data.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from clrk.cluster.configs import install_objects, redis_secret
from clrk.ingress.brokering import ACCEPTED_EVENT_TYPE, ID_EXTENSION
from clrk.ingress.worker import DEAD_LETTER_PATH, RUNS_PATH
from clrk.manifests.documents import dump_all
from tests.support.broker import BrokerStandIn
from tests.support.kubeplay import Objects, Workload, snapshot
from tests.support.podman import BASES, REPO, Pod, Pods, podman
from tests.support.stack import Platform, suffix
from tests.support.threaded import in_thread

pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]

RENDERED_REDIS = "redis:7.4-alpine"
"""platform/config/redis.yaml's image."""
RENDERED_AGENT = "example.com/clrk-test/gated:1"
LEASE_S = 3
GATED = """\
event=$(cat)
id=$(jq -r .id <<<"$event")
echo first
if [ "$(jq -r '.data.gate // false' <<<"$event")" = true ]; then
  while [ ! -e "/gates/$id" ]; do sleep 0.1; done
fi
echo second
jq -c .data <<<"$event"
"""


@pytest.fixture(scope="module")
def redis_image(build: Callable[..., str]) -> str:
    dockerfile = REPO / "tests" / "containers" / "redis.Dockerfile"
    return build("redis", dockerfile, inputs=[dockerfile], build_args={"DEBIAN_IMAGE": BASES["trixie"]})


@dataclass
class Stack:
    objects: Objects
    pods: Pods
    installed: Platform
    broker: BrokerStandIn
    broker_url: str
    caller_key: str
    gates: Path
    agent: Pod
    ingress: list[Pod] = field(default_factory=list)
    """The ingress pods playing now (the Service's endpoints)."""

    def url(self, pod: Pod) -> str:
        return f"http://{pod.address()}:8080"

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.caller_key}", "X-Clrk-TaskAgent": "default/gated", **extra}

    def call(self, pod: Pod, data: dict[str, Any], **extra: str) -> httpx.Response:
        return httpx.post(self.url(pod) + "/", json=data, headers=self.headers(**extra), timeout=60)

    def get(self, pod: Pod, path: str) -> httpx.Response:
        return httpx.get(self.url(pod) + path, headers=self.headers(), timeout=30)

    def status(self, pod: Pod, invocation_id: str) -> dict[str, Any]:
        answer = self.get(pod, f"/invocations/{invocation_id}")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def add_ingress(self) -> Pod:
        """One more pod of the ingress Deployment (its ReplicaSet's next), serving once it is ready."""
        workload = self.objects.deployment("clrk", "clrk-ingress", suffix())
        _set_env(workload, "ingress", CLRK_INGRESS_BROKER_URL=self.broker_url)  # seam: the stand-in
        _set_env(workload, "ingress", CLRK_INGRESS_RUN_LEASE_SECONDS=str(LEASE_S))
        pod = self.installed.play(self.pods, workload)
        self.installed.wait_ready(pod, lambda: routes_the_agent(self.url(pod)), "the ingress routes the agent")
        self.ingress.append(pod)
        self.broker.subscribers = [self.url(p) for p in self.ingress]
        self.broker.dead_letter = self.url(self.ingress[0]) + DEAD_LETTER_PATH
        return pod

    def kill(self, pod: Pod) -> None:
        """SIGKILL the pod's ingress process (as the OOM killer would): nothing of it is cleaned up;
        the delivery it held breaks. The Service's endpoints drop the pod (as they do once kubelet
        reports it dead), so later deliveries go to the others."""
        podman("kill", "--signal", "KILL", pod.container("ingress"))
        self.ingress.remove(pod)
        self.broker.subscribers = [self.url(p) for p in self.ingress]

    def running_on(self, invocation_id: str) -> Pod | None:
        """The ingress pod the Broker's delivery of ``invocation_id`` is held by right now."""
        event_id = self.broker.event_with(ID_EXTENSION, invocation_id)
        target = self.broker.in_flight.get(event_id or "")
        for pod in self.ingress:
            if target is not None and target.startswith(self.url(pod) + "/"):
                return pod
        return None

    def open_gate(self, invocation_id: str) -> None:
        gate = self.gates / invocation_id
        gate.touch()
        gate.chmod(0o644)

    def report(self) -> str:
        attempts = "\n".join(f"  {a}" for a in self.broker.attempts)
        pods = "\n".join(p.report() for p in [*self.ingress, self.agent])
        return f"broker attempts:\n{attempts}\n{pods}"


def _set_env(workload: Workload, container: str, **values: str) -> None:
    spec = workload.container(container)
    kept = [e for e in spec.get("env", []) if e["name"] not in values]
    spec["env"] = [*kept, *({"name": k, "value": v} for k, v in values.items())]


def routes_the_agent(url: str) -> bool:
    try:
        return int(httpx.get(url + "/healthz", timeout=3).json().get("agents", 0)) >= 1
    except (httpx.HTTPError, ValueError):
        return False


def redis_answers(address: str) -> bool:
    try:
        with socket.create_connection((address, 6379), timeout=3) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"-NOAUTH")  # up, and asking for the password
    except OSError:
        return False


def manifests(folder: Path, caller_key: str) -> Path:
    agent = {
        "apiVersion": "clrk.dev/v1alpha1",
        "kind": "TaskAgent",
        "metadata": {"name": "gated", "namespace": "default"},
        "spec": {"template": {"spec": {"image": RENDERED_AGENT, "command": ["bash", "-c", GATED]}}, "timeout": "120s"},
    }
    caller = {
        "apiVersion": "clrk.dev/v1alpha1",
        "kind": "Caller",
        "metadata": {"name": "async-tester", "namespace": "default"},
        "spec": {"keySha256": hashlib.sha256(caller_key.encode()).hexdigest(), "agents": ["gated"]},
    }
    folder.mkdir()
    (folder / "gated.yaml").write_text(dump_all([agent, caller]))
    return folder


@pytest.fixture(scope="module")
def stack(
    installed: Platform,
    network: str,
    gateway: str,
    agent_image: Callable[[str], str],
    redis_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("async")
    gates = root / "gates"
    gates.mkdir()
    gates.chmod(0o755)
    caller_key = secrets.token_urlsafe(32)
    installed.clrk("apply", "-f", str(manifests(root / "manifests", caller_key)))
    images = {RENDERED_AGENT: agent_image("examples/jq-bot"), RENDERED_REDIS: redis_image}
    objects = installed.objects(snapshot(installed.cluster), root / "files", images)
    broker = BrokerStandIn(
        [], RUNS_PATH, filter_attributes={"type": ACCEPTED_EVENT_TYPE}, retry=10, backoff_delay=0.5, timeout=600
    )
    pods = Pods(network, root)
    try:
        with in_thread(broker.serving(gateway)) as broker_url:
            redis = installed.play(pods, objects.deployment("clrk-system", "clrk-redis", suffix()))
            installed.wait_ready(redis, lambda: redis_answers(redis.address()), "Redis answers, asking a password")
            workload = objects.knative_service("default", "gated", suffix())
            workload.mount_host_folder("agent", gates, "/gates")
            agent = installed.play(pods, workload)
            installed.wait_ready(agent, lambda: _ready(f"http://{agent.address()}:80/readyz"), "the agent answers")
            stack = Stack(objects, pods, installed, broker, broker_url, caller_key, gates, agent)
            stack.add_ingress()
            stack.add_ingress()
            yield stack
    finally:
        pods.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def _accepted(stack: Stack, pod: Pod, data: dict[str, Any]) -> str:
    answer = stack.call(pod, data, Prefer="respond-async")
    assert answer.status_code == 202, f"{answer.status_code} {answer.text}\n{stack.report()}"
    invocation_id = answer.headers["x-clrk-invocation-id"]
    assert answer.headers["location"] == f"/invocations/{invocation_id}"
    assert answer.json()["status"] == "queued"
    return invocation_id


def _ended(document: dict[str, Any]) -> str:
    """The run's status, which must not be a failure (that shows the whole status document)."""
    assert document["status"] in ("queued", "running", "succeeded"), (
        f"{document['status']}: {document['httpStatus']} {document['error']} (attempt {document['attempts']})"
    )
    return str(document["status"])


def _until(stack: Stack, check: Callable[[], bool], what: str, timeout: float = 90) -> None:
    stack.ingress[0].wait_until(check, f"{what}\n{stack.report()}", timeout)


def _redis(address: str, *commands: bytes) -> list[bytes]:
    """Each command's first reply line (RESP), over one connection."""
    replies = []
    with socket.create_connection((address, 6379), timeout=5) as sock:
        reader = sock.makefile("rb")
        for command in commands:
            sock.sendall(command + b"\r\n")
            replies.append(reader.readline().rstrip(b"\r\n"))
    return replies


def test_redis_runs_as_rendered_behind_its_password(pods: Pods, redis_image: str, tmp_path: Path) -> None:
    """The rendered Deployment with a password as `clrk install` makes one: non-root on a read-only
    root, nothing answered without the password, writes kept in its append-only file in /data
    (the emptyDir a restarted container finds again)."""
    secret = redis_secret()
    objects = Objects([*install_objects(), secret], tmp_path / "files", images={RENDERED_REDIS: redis_image})
    workload = objects.deployment("clrk-system", "clrk-redis", suffix())
    pod = pods.play(workload.pod, workload.documents, workload.aliases)
    Platform.wait_ready(pod, lambda: redis_answers(pod.address()), "Redis answers, asking a password")
    config = json.loads(podman("inspect", pod.container("redis")).stdout)[0]
    assert config["HostConfig"]["ReadonlyRootfs"] is True, pod.report()
    assert config["Config"]["User"] == "65532:65532", pod.report()
    password = secret["stringData"]["password"].encode()
    wrong, refused = _redis(pod.address(), b"AUTH wrong", b"GET k")
    assert wrong.startswith(b"-WRONGPASS") and refused.startswith(b"-NOAUTH"), (wrong, refused)
    assert _redis(pod.address(), b"AUTH " + password, b"SET k kept", b"GET k") == [b"+OK", b"+OK", b"$4"]
    files = podman("exec", pod.container("redis"), "find", "/data", "-name", "*.aof").stdout
    assert "appendonly.aof" in files, f"no append-only file in /data: {files!r}"


def test_an_async_run_answers_what_a_synchronous_call_does(stack: Stack) -> None:
    first, second = stack.ingress
    data = {"n": 1}
    sync = stack.call(first, data)
    assert sync.status_code == 200, f"{sync.text}\n{stack.report()}"
    assert sync.text == 'first\nsecond\n{"n":1}\n'
    invocation_id = _accepted(stack, first, data)
    _until(stack, lambda: stack.status(second, invocation_id)["status"] == "succeeded", "the run succeeds")
    document = stack.status(second, invocation_id)
    assert (document["attempts"], document["httpStatus"], document["agent"]) == (1, 200, "default/gated")
    for pod in (first, second):  # any replica answers for any run
        result = stack.get(pod, f"/invocations/{invocation_id}/result")
        assert result.status_code == 200 and result.content == sync.content, result.text
        assert result.headers["content-type"] == sync.headers["content-type"]
        assert result.headers["x-clrk-invocation-status"] == "succeeded"


def test_a_cancel_through_one_pod_kills_the_run_held_by_the_other(stack: Stack) -> None:
    invocation_id = _accepted(stack, stack.ingress[0], {"gate": True, "n": 3})
    _until(stack, lambda: stack.running_on(invocation_id) is not None, "a pod holds the run's delivery")
    runner = stack.running_on(invocation_id)
    assert runner is not None
    _until(stack, lambda: stack.status(runner, invocation_id)["status"] == "running", "the run is under way")
    (other,) = [pod for pod in stack.ingress if pod is not runner]
    cancelled = httpx.delete(f"{stack.url(other)}/invocations/{invocation_id}", headers=stack.headers(), timeout=30)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    killed = f"[{invocation_id}] caller went away; killed"
    _until(stack, lambda: killed in stack.agent.logs("agent"), "the agent's tree is killed in its pod")
    _until(stack, lambda: stack.running_on(invocation_id) is None, "the runner's delivery ends")
    result = stack.get(runner, f"/invocations/{invocation_id}/result")
    assert result.status_code == 409 and result.json()["error"]["type"] == "invocation_cancelled", result.text
    assert stack.status(runner, invocation_id)["attempts"] == 1


def test_a_run_whose_pod_dies_is_run_again_by_the_other(stack: Stack) -> None:
    """Last: it kills a pod (and starts another, as the ReplicaSet would)."""
    invocation_id = _accepted(stack, stack.ingress[0], {"gate": True, "n": 2})
    _until(stack, lambda: stack.running_on(invocation_id) is not None, "a pod holds the run's delivery")
    doomed = stack.running_on(invocation_id)
    assert doomed is not None
    _until(stack, lambda: stack.status(doomed, invocation_id)["status"] == "running", "the run is under way")
    (survivor,) = [pod for pod in stack.ingress if pod is not doomed]
    doomed_url = stack.url(doomed)  # a killed pod has no address any more
    stack.kill(doomed)
    killed = f"[{invocation_id}] caller went away; killed"
    _until(stack, lambda: killed in stack.agent.logs("agent"), "the first attempt's tree is killed")
    _until(
        stack,
        lambda: stack.status(survivor, invocation_id)["attempts"] == 2,
        "the Broker's next delivery runs it again on the survivor, once the dead pod's lease lapsed",
    )
    stack.open_gate(invocation_id)
    _until(stack, lambda: _ended(stack.status(survivor, invocation_id)) == "succeeded", "the second attempt ends")
    replacement = stack.add_ingress()
    for pod in (survivor, replacement):
        result = stack.get(pod, f"/invocations/{invocation_id}/result")
        assert result.status_code == 200, f"{result.text}\n{stack.report()}"
        assert result.text == 'first\nsecond\n{"gate":true,"n":2}\n'
    document = stack.status(replacement, invocation_id)
    assert (document["status"], document["attempts"]) == ("succeeded", 2)
    event_id = stack.broker.event_with(ID_EXTENSION, invocation_id)
    attempts = stack.broker.attempts_for(event_id or "")
    assert attempts[0].status is None and attempts[0].target.startswith(doomed_url), attempts
    assert attempts[-1].status == 200 and attempts[-1].target.startswith(stack.url(survivor)), attempts
