"""runtime/Dockerfile's copy-in tree, in agent images that share nothing with it.

Each pod is laid out as the compiler lays out an agent's (clrk.manifests.compiling): the runtime
image's init container copies /clrk into an emptyDir as uid 65532, and the agent's image runs
/opt/clrk/bin/clrk-shim from that read-only mount as root, with the capabilities the shim keeps.
The agent images: Debian bookworm (glibc 2.36, older than the bundled 2.41), an Alpine stand-in
with no glibc (static busybox, musl's loader) and a distroless-like one (no shell, no libc, one
static ``cat``).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from clrk.cluster.confinement import parse_report
from tests.support.podman import BASES, Pods, free_port

pytestmark = pytest.mark.containers

AGENT_BASES = ["bookworm", "noglibc", "noshell"]
SHIM_CAPABILITIES = ["SETUID", "SETGID", "KILL", "CHOWN", "FOWNER", "DAC_OVERRIDE"]


def agent_pod(name: str, runtime_image: str, base: str, args: list[str], port: int | None = None) -> dict[str, Any]:
    """An agent pod as compiled for the cluster, with ``args`` for the shim."""
    shim: dict[str, Any] = {
        "name": "agent",
        "image": BASES[base],
        "command": ["/opt/clrk/bin/clrk-shim"],
        "args": args,
        "volumeMounts": [{"name": "clrk-runtime", "mountPath": "/opt/clrk", "readOnly": True}],
        "securityContext": {
            "runAsUser": 0,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": SHIM_CAPABILITIES},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if port is not None:
        shim["ports"] = [{"name": "http1", "containerPort": 8080, "hostPort": port, "hostIP": "127.0.0.1"}]
    copier = {
        "name": "clrk-runtime",
        "image": runtime_image,
        "command": ["cp", "-a", "/clrk/.", "/opt/clrk/"],
        "volumeMounts": [{"name": "clrk-runtime", "mountPath": "/opt/clrk"}],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"fsGroup": 65532},
            "initContainers": [copier],
            "containers": [shim],
            "volumes": [{"name": "clrk-runtime", "emptyDir": {}}],
        },
    }


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def serve_cat(pods: Pods, name: str, runtime_image: str, base: str, *, warm_pool: int) -> httpx.Response:
    """A shim serving ``cat`` in a plain sandbox; its 200 answer to one POST (else a failure
    carrying the pod's logs)."""
    port = free_port()
    args = ["--port", "8080", "--sandbox", "plain", "--warm-pool", str(warm_pool), "--timeout", "20s", "--", "cat"]
    pod = pods.play(agent_pod(name, runtime_image, base, args, port))
    assert pod.wait_exit("clrk-runtime") == 0, pod.report()
    pod.wait_until(lambda: _ready(port), "the shim is ready", timeout=60, running="agent")
    response = httpx.post(
        f"http://127.0.0.1:{port}/", json={"hello": base}, headers={"X-Clrk-TaskAgent": "team/cat"}, timeout=30
    )
    assert response.status_code == 200, f"{response.status_code} {response.text}\n{pod.report()}"
    # The pod's seccomp profile (RuntimeDefault) lets Landlock through: the plain sandbox is
    # confined with every piece, not run degraded.
    sandbox = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).json()["sandbox"]
    assert sandbox["kind"] == "plain", sandbox
    assert sandbox["missing"] == [], f"{sandbox}\n{pod.report()}"
    # The same, from the pod's log: the line the operator reads for the TaskAgent's status.
    report = parse_report(pod.logs("agent"))
    assert report is not None and report.kind == "plain", pod.report()
    assert (report.landlock_abi, report.missing) == (sandbox["landlockAbi"], ()), pod.report()
    return response


@pytest.mark.parametrize("base", AGENT_BASES)
def test_the_shim_starts_from_the_copied_tree(pods: Pods, pod_name: str, runtime_image: str, base: str) -> None:
    pod = pods.play(agent_pod(pod_name, runtime_image, base, ["--help"]))
    assert pod.wait_exit("clrk-runtime") == 0, pod.report()
    assert pod.wait_exit("agent") == 0, pod.report()
    assert pod.logs("agent").startswith("usage: clrk-shim"), pod.report()


@pytest.mark.parametrize("base", AGENT_BASES)
def test_a_cold_plain_sandbox_answers_a_post(pods: Pods, pod_name: str, runtime_image: str, base: str) -> None:
    response = serve_cat(pods, pod_name, runtime_image, base, warm_pool=0)
    envelope = json.loads(response.content)  # cat answers with the CloudEvent it was given
    assert envelope["data"] == {"hello": base}
    assert envelope["id"] == response.headers["X-Clrk-Invocation-Id"]


# Warm: the sandbox's directories and uid are ready before the request; no shell is needed,
# so the image with none serves as the others do.
@pytest.mark.parametrize("base", AGENT_BASES)
def test_a_warm_plain_sandbox_answers_a_post(pods: Pods, pod_name: str, runtime_image: str, base: str) -> None:
    response = serve_cat(pods, pod_name, runtime_image, base, warm_pool=1)
    assert json.loads(response.content)["data"] == {"hello": base}


# An attacking agent inside the pod: what a plain sandbox used to share with the shim (its port on
# the pod's network, the pod's /tmp) is out of its reach under the pod's own confinement.
PROBE = (
    "for port in 8080 8012; do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null"
    " && echo connect-$port:yes || echo connect-$port:no; done;"
    " (echo x > /tmp/planted) 2>/dev/null && echo tmp:yes || echo tmp:no;"
    ' (echo x > "$HOME/mine") 2>/dev/null && echo home:yes || echo home:no'
)


def test_an_agent_in_a_pod_reaches_neither_the_shims_port_nor_the_pods_tmp(
    pods: Pods, pod_name: str, runtime_image: str
) -> None:
    port = free_port()
    args = ["--port", "8080", "--sandbox", "plain", "--timeout", "20s", "--", "bash", "-c", PROBE]
    pod = pods.play(agent_pod(pod_name, runtime_image, "bookworm", args, port))
    assert pod.wait_exit("clrk-runtime") == 0, pod.report()
    pod.wait_until(lambda: _ready(port), "the shim is ready", timeout=60, running="agent")
    response = httpx.post(f"http://127.0.0.1:{port}/", json={}, headers={"X-Clrk-TaskAgent": "team/probe"}, timeout=30)
    assert response.status_code == 200, f"{response.status_code} {response.text}\n{pod.report()}"
    assert response.text.split() == ["connect-8080:no", "connect-8012:no", "tmp:no", "home:yes"], pod.report()
