"""The tier's own proof: what compiled agent pods rely on works under podman kube play here.

An init container fills an emptyDir, a container with a read-only root filesystem and a non-root
uid reads it, and a second pod reaches the first by its name over the podman network.
"""

from __future__ import annotations

import pytest

from tests.support.podman import BASES, Pods

pytestmark = pytest.mark.containers
SHOW_RIGHTS = "id -u; touch /probe || true; cat /data/message"


def test_init_container_fills_an_empty_dir_that_a_read_only_pod_serves_by_name(pods: Pods, pod_name: str) -> None:
    server = pods.play(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod_name},
            "spec": {
                "restartPolicy": "Never",
                "initContainers": [
                    {
                        "name": "fill",
                        "image": BASES["noglibc"],
                        "command": ["sh", "-c", "echo filled-by-init > /data/message"],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    }
                ],
                "containers": [
                    {
                        "name": "serve",
                        "image": BASES["noglibc"],
                        # What it is allowed shows in its log, then busybox's httpd serves the dir.
                        "command": ["sh", "-c", f"{SHOW_RIGHTS}; exec httpd -f -p 8080 -h /data"],
                        "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}],
                        "securityContext": {"readOnlyRootFilesystem": True, "runAsUser": 65534},
                    }
                ],
                "volumes": [{"name": "data", "emptyDir": {}}],
            },
        }
    )
    assert server.wait_exit("fill") == 0, server.report()
    server.wait_until(lambda: "filled-by-init" in server.logs("serve"), "the server reads the file", running="serve")
    log = server.logs("serve")
    assert log.splitlines()[0] == "65534", server.report()
    assert "Read-only file system" in log, server.report()

    # busybox-static's wget cannot resolve names (static glibc has no NSS): bash's /dev/tcp can.
    fetch = f"exec 3<>/dev/tcp/{pod_name}/8080; printf 'GET /message HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3"
    client = pods.play(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{pod_name}-client"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "fetch", "image": BASES["bookworm"], "command": ["bash", "-c", fetch]}],
            },
        }
    )
    assert client.wait_exit("fetch") == 0, client.report()
    answer = client.logs("fetch")
    assert answer.startswith("HTTP/1.1 200 OK"), client.report()
    assert answer.rstrip().endswith("filled-by-init"), client.report()
