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

A TaskSchedule for jq-bot, with the guide's request as its data, is applied beside it: its
PingSource is not run (no Eventing here), but what it would post is posted, from inside the
network, to the sink URL the API server holds.

A second agent, ``litter``, in jq-bot's image, writes a file into /tmp, its TMPDIR and its HOME
(wherever its sandbox lets it), reports every file of that name it can find, and tries to read its
namespace's keys, which the shim holds.

Run nothing else that starts ``clrk-shim`` as root on this host meanwhile (another test session's
runtime tests): the pods share the host's uids (rootful podman, no user namespace), and a host-side
spawner's sweep of sandbox uid U (``kill(-1)`` as U) also kills this tier's sandbox of uid U, which
then answers 502 "exited with code -9". ``make test`` runs the tiers one after another.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from clrk.manifests.documents import dump_all
from clrk_runtime.protocol.headers import INVOCATION_HEADER, SIGNATURE_HEADER
from clrk_runtime.protocol.ids import new_invocation_id
from clrk_runtime.protocol.keys import namespace_key
from clrk_runtime.protocol.signing import sign_request
from clrk_runtime.service.warming import WARM_START_PREFIX
from tests.support.jq_bot import GUIDE_ANSWER, GUIDE_BODY, JQ_FILTER, REPO
from tests.support.kubeplay import snapshot
from tests.support.podman import Pod, Pods, podman
from tests.support.stack import Platform, suffix
from tests.support.tlsca import TestCA

pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]

FAKE_ADDRESS = "fake-anthropic.test"
OPS_SECRET = "ops-callers"
"""The Secret (namespace default) holding the key of Caller ``ops``."""
"""The fake Anthropic API's name on the podman network (the egress's upstream seam dials it)."""
LITTER = """\
event=$(cat)
id=$(jq -r .id <<<"$event")
found=$(find / \\( -path /proc -o -path /sys \\) -prune -o -name litter.txt -print 2>/dev/null | tr '\\n' ' ')
wrote=""
for dir in /tmp "$TMPDIR" "$HOME"; do
  printf %s "$id" >"$dir/litter.txt" 2>/dev/null && wrote="$wrote $dir"
done
keys=$(cat /var/run/clrk/keys/request /var/run/clrk/keys/proxy-token 2>&1 | head -c 300)
jq -cn --arg id "$id" --arg found "$found" --arg wrote "$wrote" --arg keys "$keys" \\
  '{id: $id, found: $found, wrote: $wrote, keys: $keys}'
"""


@dataclass
class Stack:
    url: str
    """The ingress, as the host reaches its pod."""
    key: str
    """The provider key: a Secret in clrk-system, mounted by the egress alone."""
    caller_key: str
    ops_key: str
    """Caller ``ops``'s key, which the ingress reads from Secret default/ops-callers."""
    pods: dict[str, Pod]
    platform_key: bytes
    """What `clrk install` generated (Secret clrk-system/clrk-platform-key)."""

    def call(self, agent: str, body: str, timeout: float = 90, key: str | None = None) -> httpx.Response:
        headers = {
            "content-type": "application/json",
            "X-Clrk-TaskAgent": f"default/{agent}",
            "Authorization": f"Bearer {key or self.caller_key}",
        }
        return httpx.post(self.url, headers=headers, content=body, timeout=timeout)

    def report(self) -> str:
        return "\n".join(pod.report() for pod in self.pods.values())

    def model_calls(self) -> list[dict[str, Any]]:
        """The Messages requests the fake API received (one JSON line each in its log)."""
        lines = self.pods["fake"].logs("fake").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


def extra_manifests(folder: Path, caller_key: str, image: str) -> Path:
    # The guide's caller by digest; a second one whose key the ingress pod reads from a Secret,
    # under the Role `clrk apply` writes for it (its ClusterRole reads no Secret).
    caller = {
        "apiVersion": "clrk.dev/v1alpha1",
        "kind": "Caller",
        "metadata": {"name": "guide-reader", "namespace": "default"},
        "spec": {"keySha256": hashlib.sha256(caller_key.encode()).hexdigest(), "agents": ["jq-bot", "litter"]},
    }
    by_secret = {
        "apiVersion": "clrk.dev/v1alpha1",
        "kind": "Caller",
        "metadata": {"name": "ops", "namespace": "default"},
        "spec": {"keySecretRef": {"name": OPS_SECRET, "key": "key"}, "agents": ["jq-bot"]},
    }
    litter = {
        "apiVersion": "clrk.dev/v1alpha1",
        "kind": "TaskAgent",
        "metadata": {"name": "litter", "namespace": "default"},
        "spec": {"template": {"spec": {"image": image, "command": ["bash", "-c", LITTER]}}, "warmPoolSize": 1},
    }
    schedule = {
        "apiVersion": "clrk.dev/v1alpha1",
        "kind": "TaskSchedule",
        "metadata": {"name": "guide-nightly", "namespace": "default"},
        "spec": {"agent": "jq-bot", "schedule": "0 3 * * *", "data": json.loads(GUIDE_BODY)},
    }
    folder.mkdir()
    (folder / "extra.yaml").write_text(dump_all([caller, by_secret, litter, schedule]))
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
    caller_key, ops_key = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    cluster = installed.cluster
    for name, value in ((OPS_SECRET, ops_key), ("unrelated", "not-a-caller-key")):
        cluster.resource("v1", "Secret").server_side_apply(
            body={
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": "default"},
                "stringData": {"key": value},
            },
            field_manager="kubectl",
        )
    # The provider key, as docs/cluster.md says to give it: a Secret in clrk-system, granted to
    # the namespace whose policy names it (the example's, default).
    cluster.resource("v1", "Secret").server_side_apply(
        body={
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "anthropic-credentials",
                "namespace": "clrk-system",
                "annotations": {"clrk.dev/namespaces": "default"},
            },
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

        held = len(cluster.resource("clrk.dev/v1alpha1", "TaskAgent").get().to_dict()["items"])

        def routes_both() -> bool:  # /healthz counts the agents it routes (it never names them)
            return answers(healthz)() and httpx.get(healthz).json()["agents"] == held

        installed.wait_ready(ingress, routes_both, "the ingress routes jq-bot and litter")
        platform = cluster.read(cluster.resource("v1", "Secret"), "clrk-platform-key", "clrk-system")
        assert platform
        platform_key = base64.b64decode(platform["data"]["key"]).strip()
        yield Stack(f"http://{ingress.address()}:8080/", key, caller_key, ops_key, played, platform_key)
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


def test_a_caller_whose_key_the_ingress_reads_from_a_secret_gets_the_answer(stack: Stack) -> None:
    # The ingress pod, with its own token, reads Secret default/ops-callers under the Role
    # `clrk apply` wrote beside Caller ops; its ClusterRole would read none.
    response = stack.call("jq-bot", GUIDE_BODY, key=stack.ops_key)
    assert response.status_code == 200, f"{response.status_code} {response.text}\n{stack.report()}"
    assert response.text.strip() == GUIDE_ANSWER
    wrong = stack.call("jq-bot", GUIDE_BODY, key="not-a-caller-key")
    assert wrong.status_code == 401, wrong.text
    assert "not readable by the ingress" not in stack.pods["ingress"].logs("ingress")


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
    assert before["wrote"].strip(), f"the first invocation could write nowhere, not even its TMPDIR: {before}"
    assert after["found"] == "", f"the second invocation found the first's file: {after}"


def test_an_agent_cannot_read_its_namespaces_keys(stack: Stack) -> None:
    """The pod mounts them for the shim (0400, root's; 0440 for the fsGroup under kubelet): the
    sandbox's uid, with no supplementary group, gets "Permission denied"."""
    answer = stack.call("litter", "{}")
    assert answer.status_code == 200, f"{answer.text}\n{stack.report()}"
    keys = answer.json()["keys"]
    assert keys.count("Permission denied") == 2, f"the agent read its namespace's keys: {keys!r}"


def _forged(agent: str, key: bytes, body: bytes) -> dict[str, str]:
    """The headers the ingress would forward for ``agent``, signed with ``key``."""
    invocation = new_invocation_id()
    signature = sign_request(
        key,
        now=time.time(),
        method="POST",
        agent=agent,
        invocation_id=invocation,
        timeout_ms="",
        content_type="application/json",
        body=body,
    )
    return {"content-type": "application/json", INVOCATION_HEADER: invocation, SIGNATURE_HEADER: signature}


def test_a_call_around_the_ingress_is_refused_and_the_agent_never_runs(stack: Stack) -> None:
    """Whoever reaches an agent's pod directly (another pod, with no NetworkPolicy enforced) gets
    401 from the shim, on its own port and through the Service's: unsigned, signed with another
    namespace's request key (what a tenant reading its own namespace's Secrets holds), or signed
    for another agent. jq-bot calls the model on every run: the fake API sees no call."""
    pod = stack.pods["jq-bot"]
    body = GUIDE_BODY.encode()
    other_tenant = namespace_key(stack.platform_key, "request", "other-team")
    own = namespace_key(stack.platform_key, "request", "default")
    attempts = {
        "unsigned": {"content-type": "application/json"},
        "another namespace's key": _forged("default/jq-bot", other_tenant, body),
        "signed for another agent": _forged("default/litter", own, body),
    }
    before = len(stack.model_calls())
    for port in (8080, 80):
        for what, headers in attempts.items():
            response = httpx.post(f"http://{pod.address()}:{port}/", headers=headers, content=body, timeout=60)
            assert response.status_code == 401, f"{what} on :{port}: {response.status_code} {response.text}"
    assert len(stack.model_calls()) == before, f"the agent ran\n{stack.report()}"
    through_ingress = stack.call("jq-bot", GUIDE_BODY)
    assert through_ingress.status_code == 200, f"{through_ingress.text}\n{stack.report()}"
    assert through_ingress.text.strip() == GUIDE_ANSWER
    assert len(stack.model_calls()) > before, "the signed call did run"


READ_ENVIRON = """
for process in /proc/[0-9]*; do
  for attempt in 1 2 3 4 5; do
    cat "$process/environ" 2>/dev/null && { echo; continue 2; }
    sleep 0.05
  done
  state=$(sed 's/.*) //' "$process/stat" 2>/dev/null | cut -c1)
  case "$state" in "" | Z | X) ;; *) echo "UNREADABLE $process ($state)" ;; esac
done
"""
"""Every process's environment, one per line; a live process whose environment cannot be read for
a quarter of a second says so (one that ended meanwhile, or a zombie, has none left to read).
Running processes of the pod were seen refusing reads for a few milliseconds while sandboxes were
being set up (with warm start, while other sandboxes serve): a child of the spawner between its
switch to the sandbox's uid and its exec is not dumpable. A refusal that short is a transition,
not a hidden environment."""


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
            "-e",
            stack.platform_key.decode(),
            "/",
            check=False,
            timeout=300,
        )
        # The platform key too: the pod holds only its namespace's keys, derived from it.
        assert found.stdout.strip() == "", f"a key is in files of {pod.container('agent')}: {found.stdout}"
        for spec in [*pod.manifest["spec"].get("initContainers", []), *pod.manifest["spec"]["containers"]]:
            assert key not in pod.logs(spec["name"]), f"the key is in the logs of {pod.container(spec['name'])}"


PING_POST = """
import json, sys, urllib.error, urllib.request
request = urllib.request.Request(sys.argv[1], data=sys.argv[3].encode(), headers=json.loads(sys.argv[2]), method="POST")
try:
    with urllib.request.urlopen(request, timeout=150) as response:
        status, body = response.status, response.read()
except urllib.error.HTTPError as refused:
    status, body = refused.code, refused.read()
print(json.dumps({"status": status, "body": body.decode()}))
"""
"""POSTs argv[3] with the headers argv[2] to the URL argv[1]; prints the status and the body."""


def _as_ping_source(stack: Stack, url: str, ping: dict[str, Any]) -> tuple[int, str]:
    """What Knative's PingSource adapter sends at a run (binary CloudEvent: ``ce-*`` headers, the
    schedule's ``contentType`` and ``data`` as the body, nothing of its own), sent from a pod of
    the network (the fake API's: it has python3) to ``url``."""
    meta = ping["metadata"]
    headers = {
        "Content-Type": ping["spec"]["contentType"],
        "ce-specversion": "1.0",
        "ce-id": secrets.token_hex(16),
        "ce-source": f"/apis/v1/namespaces/{meta['namespace']}/pingsources/{meta['name']}",
        "ce-type": "dev.knative.sources.ping",
        "ce-time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    fake = stack.pods["fake"].container("fake")
    argv = ["python3", "-c", PING_POST, url, json.dumps(headers), ping["spec"]["data"]]
    done = podman("exec", fake, *argv, timeout=200)
    answer = json.loads(done.stdout)
    return int(answer["status"]), str(answer["body"])


def test_a_scheduled_run_posted_as_its_ping_source_posts_it_gets_the_guides_answer(
    stack: Stack, installed: Platform
) -> None:
    """The sink URL `clrk apply` stored is the ingress's schedule route with jq-bot's token: posted
    there as the PingSource's adapter would, jq-bot answers (the ingress signed the run, or its
    shim would have refused it). A token changed by one character, or jq-bot's token moved to
    litter, gets 404, and jq-bot never runs (the fake API sees no call)."""
    cluster = installed.cluster
    ping = cluster.read(cluster.resource("sources.knative.dev/v1", "PingSource"), "guide-nightly", "default")
    assert ping, "clrk apply stored the schedule's PingSource"
    sink = httpx.URL(ping["spec"]["sink"]["uri"])
    assert (sink.host, sink.port) == ("clrk-ingress.clrk.svc.cluster.local", None), sink
    # Seam: kubeplay gives the ingress pod its Service's name but not the Service's port mapping
    # (80 → 8080), so the sink's URL is posted to the pod's port.
    url = str(sink.copy_with(port=8080))
    before = len(stack.model_calls())
    status, body = _as_ping_source(stack, url, ping)
    assert status == 200, f"{status} {body}\n{stack.report()}"
    assert body.strip() == GUIDE_ANSWER
    assert len(stack.model_calls()) > before, "jq-bot ran and called the model"

    prefix, token = sink.path.rsplit("/", 1)
    wrong = {
        "a token one character off": f"{prefix}/{token[:-1]}{'A' if token[-1] != 'A' else 'B'}",
        "jq-bot's token for litter": sink.path.replace("/default/jq-bot/", "/default/litter/"),
        "the placeholder": f"{prefix}/TOKEN-FILLED-IN-AT-APPLY",
    }
    before = len(stack.model_calls())
    for what, path in wrong.items():
        status, body = _as_ping_source(stack, str(sink.copy_with(port=8080, path=path)), ping)
        assert status == 404, f"{what}: {status} {body}"
        assert json.loads(body)["error"]["type"] == "unknown_schedule", body
    assert len(stack.model_calls()) == before, f"an agent ran on a wrong token\n{stack.report()}"


WARM_START_LINE = re.compile(re.escape(WARM_START_PREFIX) + r"(\{.*\})$", re.MULTILINE)
"""The shim's line at each change of warm start's state (JSON to the end of the line)."""


def test_jq_bots_pod_starts_the_agent_ahead_and_keeps_doing_so(stack: Stack) -> None:
    """The example says ``warmStart: true``: as compiled, jq-bot's shim starts agent.sh (and its
    Claude CLI) in the warm sandbox before its request, says so once in its log, and still does
    after the guide's requests (no failure, no fallback to starting on request)."""
    pod = stack.pods["jq-bot"]
    (agent,) = [c for c in pod.manifest["spec"]["containers"] if c["name"] == "agent"]
    env = {item["name"]: item.get("value") for item in agent.get("env", [])}
    assert env.get("CLRK_WARM_START") == "true", "compiled from the example, the shim is told to warm-start"
    for attempt in range(3):
        response = stack.call("jq-bot", GUIDE_BODY)
        assert response.status_code == 200, f"call {attempt + 1}: {response.text}\n{stack.report()}"
        assert response.text.strip() == GUIDE_ANSWER
    log = pod.logs("agent")
    states = [json.loads(match) for match in WARM_START_LINE.findall(log)]
    assert states, f"no {WARM_START_PREFIX.strip()} line in the shim's log\n{log[-3000:]}"
    assert states[0] == {"agent": "default/jq-bot", "state": "on", "failures": 0, "reason": ""}, states
    assert [s for s in states if s["state"] != "on"] == [], f"warm start failed\n{log[-3000:]}"
    assert "warm start failed" not in log, log[-3000:]


def test_jq_bots_shim_logs_the_start_up_of_its_warm_sandbox(stack: Stack) -> None:
    """A model call made while the agent starts is counted under a start-up id at the gateway:
    the shim's log names that id for jq-bot, so a call seen there can be traced to its agent."""
    response = stack.call("jq-bot", GUIDE_BODY)
    assert response.status_code == 200, f"{response.text}\n{stack.report()}"
    log = stack.pods["jq-bot"].logs("agent")
    assert re.search(r"default/jq-bot\b.*\bstart-up [0-9a-f]{8}-[0-9a-f-]{27}", log), log[-3000:]
