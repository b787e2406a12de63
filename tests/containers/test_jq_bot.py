"""The guide's curl, end to end through containers.

caller (this test, on the host) → ingress pod → jq-bot's pod (its image built here, the runtime
copied in by the init container, as compiled) → egress pod → a fake Anthropic API over TLS, in a
pod of its own → the guide's answer. Everything runs as the cluster would run it: ``clrk install``
and ``clrk apply -f examples/jq-bot/manifests`` (the real CLI) against a real kube-apiserver, then
the objects it holds become pods (tests/support/kubeplay.py says what stands in for kubelet and
Knative). Test seams, each named where it is made: the egress gets ``--egress-upstream
api.anthropic.com:443=<the fake>`` and the fake's CA (``--egress-upstream-ca``), and the ingress,
which authenticates callers in a cluster, is called with the key of a Caller applied beside the
example (the guide's curl sends none: an installed ingress answers that with 401).

A second agent, ``litter``, in jq-bot's image, writes into /tmp and reports what it finds there.

Run nothing else that starts ``clrk-shim`` as root on this host meanwhile (another test session's
runtime tests): the pods share the host's uids (rootful podman, no user namespace), and a host-side
spawner's sweep of sandbox uid U (``kill(-1)`` as U) also kills this tier's sandbox of uid U, which
then answers 502 "exited with code -9". ``make test`` runs the tiers one after another.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from clrk.manifests.documents import dump_all
from tests.support.jq_bot import GUIDE_ANSWER, GUIDE_BODY, JQ_FILTER, REPO
from tests.support.kubeplay import snapshot
from tests.support.podman import Pod, Pods, podman
from tests.support.stack import Platform, suffix
from tests.support.tlsca import TestCA

pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]

FAKE_ADDRESS = "fake-anthropic.test"
"""The fake Anthropic API's name on the podman network (the egress's upstream seam dials it)."""
LITTER = """\
event=$(cat)
id=$(jq -r .id <<<"$event")
seen=$(ls -A /tmp | tr '\\n' ' ')
found=$(cat /tmp/litter.txt 2>/dev/null || echo none)
if printf %s "$id" >/tmp/litter.txt 2>/dev/null; then wrote=yes; else wrote=no; fi
jq -cn --arg id "$id" --arg seen "$seen" --arg found "$found" --arg wrote "$wrote" \\
  '{id: $id, seen: $seen, found: $found, wrote: $wrote}'
"""


@dataclass
class Stack:
    url: str
    """The ingress, as the host reaches its pod."""
    key: str
    """The provider key: a Secret in clrk-system, mounted by the egress alone."""
    caller_key: str
    pods: dict[str, Pod]

    def call(self, agent: str, body: str, timeout: float = 90) -> httpx.Response:
        headers = {
            "content-type": "application/json",
            "X-Clrk-TaskAgent": f"default/{agent}",
            "Authorization": f"Bearer {self.caller_key}",
        }
        return httpx.post(self.url, headers=headers, content=body, timeout=timeout)

    def report(self) -> str:
        return "\n".join(pod.report() for pod in self.pods.values())

    def model_calls(self) -> list[dict[str, Any]]:
        """The Messages requests the fake API received (one JSON line each in its log)."""
        lines = self.pods["fake"].logs("fake").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


def extra_manifests(folder: Path, caller_key: str, image: str) -> Path:
    caller = {
        "apiVersion": "clrk.dev/v1alpha1",
        "kind": "Caller",
        "metadata": {"name": "guide-reader", "namespace": "default"},
        "spec": {"keySha256": hashlib.sha256(caller_key.encode()).hexdigest(), "agents": ["jq-bot", "litter"]},
    }
    litter = {
        "apiVersion": "clrk.dev/v1alpha1",
        "kind": "TaskAgent",
        "metadata": {"name": "litter", "namespace": "default"},
        "spec": {"template": {"spec": {"image": image, "command": ["bash", "-c", LITTER]}}, "warmPoolSize": 1},
    }
    folder.mkdir()
    (folder / "extra.yaml").write_text(dump_all([caller, litter]))
    return folder


def fake_anthropic(name: str, image: str, tls: Path) -> dict[str, Any]:
    """The fake API in a pod of its own: this repository's tests/ mounted read-only, run by the
    tools image's python3, serving api.anthropic.com's certificate (from the test CA) on :8443."""
    argv = ["python3", "-B", "-m", "tests.support.serve_fake_anthropic", "--port", "8443"]
    argv += ["--cert", "/etc/fake/api.anthropic.com.crt", "--key", "/etc/fake/api.anthropic.com.key"]
    argv += ["--structured-output", json.dumps({"filter": JQ_FILTER})]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "fake",
                    "image": image,
                    "command": argv,
                    "workingDir": "/src",
                    "volumeMounts": [
                        {"name": "tests", "mountPath": "/src/tests", "readOnly": True},
                        {"name": "tls", "mountPath": "/etc/fake", "readOnly": True},
                    ],
                }
            ],
            "volumes": [
                {"name": "tests", "hostPath": {"path": str(REPO / "tests"), "type": "Directory"}},
                {"name": "tls", "hostPath": {"path": str(tls), "type": "Directory"}},
            ],
        },
    }


def answers(url: str, status: int = 200) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=3).status_code == status
        except httpx.HTTPError:
            return False

    return check


@pytest.fixture(scope="module")
def stack(
    installed: Platform,
    network: str,
    agent_image: Callable[[str], str],
    tools_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("jq-bot")
    key = "sk-ant-api03-" + secrets.token_urlsafe(48)
    caller_key = secrets.token_urlsafe(32)
    cluster = installed.cluster
    # The provider key, as docs/cluster.md says to give it: a Secret in clrk-system.
    cluster.resource("v1", "Secret").server_side_apply(
        body={
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "anthropic-credentials", "namespace": "clrk-system"},
            "stringData": {"api-key": key},
        },
        field_manager="kubectl",
    )
    rendered_image = "ghcr.io/clrk-dev/examples/jq-bot:0.1.0"  # examples/jq-bot/manifests/taskagent.yaml
    extra = extra_manifests(root / "manifests", caller_key, rendered_image)
    installed.clrk("apply", "-f", str(REPO / "examples" / "jq-bot" / "manifests"), "-f", str(extra))
    objects = installed.objects(snapshot(cluster), root / "files", {rendered_image: agent_image("examples/jq-bot")})
    ca = TestCA.create(root / "tls", "clrk container tier upstream CA")
    ca.issue(["api.anthropic.com"])

    egress = objects.deployment("clrk-system", "clrk-egress", suffix())
    egress.container("egress")["args"] += [
        f"--egress-upstream=api.anthropic.com:443={FAKE_ADDRESS}:8443",
        "--egress-upstream-ca=/var/run/clrk-test/upstream/ca.pem",
    ]
    egress.mount_host_folder("egress", root / "tls", "/var/run/clrk-test/upstream")
    workloads = {
        "egress": egress,
        "jq-bot": objects.knative_service("default", "jq-bot", suffix()),
        "litter": objects.knative_service("default", "litter", suffix()),
        "ingress": objects.deployment("clrk", "clrk-ingress", suffix()),
    }
    pods = Pods(network, root)
    try:
        fake = pods.play(fake_anthropic(f"fake-anthropic-{suffix()}", tools_image, root / "tls"), (), [FAKE_ADDRESS])
        played = {"fake": fake}
        played.update({name: installed.play(pods, workload) for name, workload in workloads.items()})
        fake.wait_until(lambda: "listening" in fake.logs("fake"), "the fake API listens", running="fake")
        installed.wait_ready(played["egress"], lambda: proxy_answers(played["egress"].address()), "the gateway answers")
        for agent in ("jq-bot", "litter"):
            pod = played[agent]
            # The shim's readiness, on its own port and through the Service's port 80.
            installed.wait_ready(pod, answers(f"http://{pod.address()}:8080/readyz"), f"{agent}'s shim is ready")
            installed.wait_ready(pod, answers(f"http://{pod.address()}:80/readyz"), f"{agent} answers on port 80")
        ingress = played["ingress"]
        healthz = f"http://{ingress.address()}:8080/healthz"

        def routes_both() -> bool:
            routed = set(httpx.get(healthz).json()["agents"]) if answers(healthz)() else set()
            return {"default/jq-bot", "default/litter"} <= routed

        installed.wait_ready(ingress, routes_both, "the ingress routes jq-bot and litter")
        yield Stack(f"http://{ingress.address()}:8080/", key, caller_key, played)
    finally:
        pods.close()


def proxy_answers(address: str) -> bool:
    try:
        response = httpx.get("http://api.anthropic.com/", proxy=f"http://{address}:3128", timeout=3)
    except httpx.HTTPError:
        return False
    return response.status_code == 407


def test_the_guides_curl_gives_the_guides_answer(stack: Stack) -> None:
    response = stack.call("jq-bot", GUIDE_BODY)
    assert response.status_code == 200, f"{response.status_code} {response.text}\n{stack.report()}"
    assert response.text.strip() == GUIDE_ANSWER
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-clrk-invocation-id"]
    calls = stack.model_calls()
    assert calls, "the model was called through the egress gateway"
    key_digest = hashlib.sha256(stack.key.encode()).hexdigest()
    assert all(call["x-api-key-sha256"] == key_digest for call in calls), "the egress injected the real key"


def test_jq_bot_answers_ten_times_in_a_row_in_one_pod(stack: Stack) -> None:
    ids = set()
    for attempt in range(10):
        response = stack.call("jq-bot", GUIDE_BODY)
        assert response.status_code == 200, f"call {attempt + 1}: {response.text}\n{stack.report()}"
        assert response.text.strip() == GUIDE_ANSWER
        ids.add(response.headers["x-clrk-invocation-id"])
    assert len(ids) == 10


def test_a_second_invocation_cannot_see_a_file_the_first_left_in_tmp(stack: Stack) -> None:
    first = stack.call("litter", "{}")
    assert first.status_code == 200, f"{first.text}\n{stack.report()}"
    second = stack.call("litter", "{}")
    assert second.status_code == 200, f"{second.text}\n{stack.report()}"
    before, after = first.json(), second.json()
    assert before["wrote"] == "yes", f"the first invocation could not write /tmp/litter.txt: {before}"
    assert after["found"] == "none", f"the second invocation read the first's file: {after}"
    assert "litter.txt" not in after["seen"], f"the first invocation's file is still in /tmp: {after}"


READ_ENVIRON = """
for process in /proc/[0-9]*; do
  cat "$process/environ" 2>/dev/null && { echo; continue; }
  state=$(sed 's/.*) //' "$process/stat" 2>/dev/null | cut -c1)
  case "$state" in "" | Z | X) ;; *) echo "UNREADABLE $process ($state)" ;; esac
done
"""
"""Every process's environment, one per line; a live process whose environment cannot be read says
so (one that ended meanwhile, or a zombie, has none left to read)."""


def _running_containers(pod: Pod) -> list[str]:
    return [c["name"] for c in pod.manifest["spec"]["containers"] if pod.state(c["name"])[0] == "running"]


def _environ(pod: Pod, container: str) -> str:
    # --privileged: reading another uid's environ takes CAP_SYS_PTRACE, which the shim's container
    # does not have (for the inspecting process only: the container itself is unchanged).
    environ = podman("exec", "--privileged", pod.container(container), "sh", "-c", READ_ENVIRON).stdout
    assert "UNREADABLE" not in environ, environ
    return environ


def test_the_key_is_in_no_agent_containers_environment_files_or_logs(stack: Stack) -> None:
    key = stack.key
    pod = stack.pods["jq-bot"]
    # Read every process's environment while invocations run, until one caught a sandbox's (its
    # proxy settings): a warm plain sandbox has no process before its request.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        calls = pool.submit(lambda: [stack.call("jq-bot", GUIDE_BODY).status_code for _ in range(20)])
        seen_sandbox = False
        while not calls.done():
            environ = _environ(pod, "agent")
            assert key not in environ, f"the key is in the environment of a process of {pod.container('agent')}"
            seen_sandbox = seen_sandbox or "HTTPS_PROXY=" in environ.upper()
        assert calls.result() == [200] * 20, stack.report()
    assert seen_sandbox, "no sandbox's environment was read while 20 invocations ran"
    assert stack.model_calls(), "the key did travel: the egress injected it"
    for agent in ("jq-bot", "litter"):
        pod = stack.pods[agent]
        for container in _running_containers(pod):
            environ = _environ(pod, container)
            assert key not in environ, f"the key is in the environment of a process of {pod.container(container)}"
        found = podman(
            "exec",
            pod.container("agent"),
            "grep",
            "-rlsF",
            "--exclude-dir=proc",
            "--exclude-dir=sys",
            "--exclude-dir=dev",
            "-e",
            key,
            "/",
            check=False,
            timeout=300,
        )
        assert found.stdout.strip() == "", f"the key is in files of {pod.container('agent')}: {found.stdout}"
        for spec in [*pod.manifest["spec"].get("initContainers", []), *pod.manifest["spec"]["containers"]]:
            assert key not in pod.logs(spec["name"]), f"the key is in the logs of {pod.container(spec['name'])}"
