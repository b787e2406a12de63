"""What Knative and Kubernetes do with the compiled objects, checked on the objects themselves:
timeouts a long agent survives, scale annotations Knative's webhook accepts, a root shim that
``secure-pod-defaults`` cannot stop, the Pod Security level, resources, the sandboxes' storage,
one ingress-side Service per agent whatever its namespace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clrk.api import TaskAgent
from clrk.api.common import format_duration, parse_duration
from clrk.cluster.configs import AGENT_POD_SECURITY
from clrk.errors import SpecError
from clrk.manifests import ClusterOptions, compile_bundle, load_bundle
from clrk.manifests.compiling import (
    KNATIVE_TIMEOUT_MARGIN_S,
    SANDBOX_DIR,
    ingress_service,
    ingress_service_name,
    knative_service,
    scaling,
    shim_seconds,
)
from clrk.manifests.documents import dump_all
from clrk.manifests.options import DEFAULT_AGENT_RESOURCES, PlatformSettings
from clrk_runtime.protocol.durations import parse_duration as parse_seconds
from clrk_runtime.server.main import build_settings
from tests.support.podsecurity import lowest_level, pss_violations, root_refused_by_kubelet, secure_pod_defaults


def agent(name: str = "bot", namespace: str = "team", **spec: Any) -> TaskAgent:
    return TaskAgent.model_validate(
        {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"template": {"spec": {"image": "example.com/bot:1", "command": ["cat"]}}, **spec},
        }
    )


def pod(service: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = service["spec"]["template"]["spec"]
    return spec


def shim_arg(service: dict[str, Any], flag: str) -> str:
    args: list[str] = pod(service)["containers"][0]["args"]
    return args[args.index(flag) + 1]


def compiled(**spec: Any) -> dict[str, Any]:
    return knative_service(agent(**spec), ["cat"], ClusterOptions())


# 1. Timeouts


@pytest.mark.parametrize(
    ("timeout", "seconds", "shim"),
    [
        ("500s", 500, "500s"),  # past Knative's 300 s response-start default
        ("10m", 600, "600s"),
        ("250ms", 1, "0.25s"),  # int() would give 0: "use the cluster's default" to Knative
        ("100.5s", 101, "100.5s"),  # rounded up for Knative, exact for the shim
        ("1m30.000001s", 91, "90.000001s"),
    ],
)
def test_knative_waits_longer_than_the_shim(timeout: str, seconds: int, shim: str) -> None:
    """Past the shim's deadline by a margin: the shim's own 504 (or outcome event) must win the
    race with queue-proxy's timeout, whose clock starts first."""
    service = compiled(timeout=timeout)
    assert pod(service)["timeoutSeconds"] == seconds + KNATIVE_TIMEOUT_MARGIN_S
    assert pod(service)["responseStartTimeoutSeconds"] == seconds + KNATIVE_TIMEOUT_MARGIN_S, (
        "a buffered answer starts only at the end"
    )
    assert shim_arg(service, "--timeout") == shim


@pytest.mark.parametrize("text", ["100s", "1m30s", "1h", "0.25s", "100.5s", "90.000001s", "599.999999s"])
def test_durations_are_written_back_exactly(text: str) -> None:
    value = parse_duration(text)
    assert parse_duration(format_duration(value)) == value
    assert parse_seconds(shim_seconds(value)) == value.total_seconds(), "the shim reads what was written"


# 2. Scale


@pytest.mark.parametrize("warm", range(0, 9))
@pytest.mark.parametrize("most", range(1, 13))
def test_scale_annotations_are_ones_knative_accepts(warm: int, most: int) -> None:
    if most < warm:
        with pytest.raises(ValueError, match=r"spec\.warmPoolSize"):
            agent(warmPoolSize=warm, maxConcurrency=most)
        return
    annotations = compiled(warmPoolSize=warm, maxConcurrency=most)["spec"]["template"]["metadata"]["annotations"]
    low, high = (
        int(annotations["autoscaling.knative.dev/min-scale"]),
        int(annotations["autoscaling.knative.dev/max-scale"]),
    )
    assert low == warm and low <= high, "Knative: max-scale must not be less than min-scale"
    per_pod, _ = scaling(most, warm)
    assert per_pod * high == most, "never more invocations at once than maxConcurrency"


def test_warm_pool_three_with_eight_at_most() -> None:
    service = compiled(warmPoolSize=3, maxConcurrency=8)
    annotations = service["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/min-scale"] == "3"
    assert annotations["autoscaling.knative.dev/max-scale"] == "4"
    assert pod(service)["containerConcurrency"] == 2 and shim_arg(service, "--max-concurrency") == "2"


def test_warm_start_changes_only_the_shims_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pod, its scale and its probes stay: only the shim starts its warm sandboxes' agents
    ahead, which it reads from ``CLRK_WARM_START`` (checked with the shim's own settings)."""
    plain, ahead = compiled(warmPoolSize=2), compiled(warmPoolSize=2, warmStart=True)
    env = {e["name"]: e["value"] for e in pod(ahead)["containers"][0].pop("env")}
    plain_env = {e["name"]: e["value"] for e in pod(plain)["containers"][0].pop("env")}
    assert ahead == plain
    assert env == {**plain_env, "CLRK_WARM_START": "true"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert build_settings(pod(ahead)["containers"][0]["args"]).warm_start is True
    monkeypatch.delenv("CLRK_WARM_START")
    assert build_settings(pod(plain)["containers"][0]["args"]).warm_start is False


def test_validate_refuses_a_warm_pool_larger_than_max_concurrency(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    doc = agent(warmPoolSize=2, maxConcurrency=2).model_dump(mode="json", by_alias=True)
    doc["spec"]["warmPoolSize"] = 3
    path.write_text(dump_all([doc]))
    with pytest.raises(SpecError) as info:
        load_bundle([str(path)])
    assert str(path) in str(info.value)
    assert info.value.field == "spec.maxConcurrency" and "spec.warmPoolSize (3)" in info.value.message


# 5. Root shim, Pod Security


def test_secure_pod_defaults_cannot_stop_the_root_shim() -> None:
    defaulted = secure_pod_defaults(pod(compiled()))
    assert root_refused_by_kubelet(defaulted) == []
    assert pod(compiled())["containers"][0]["securityContext"]["runAsNonRoot"] is False


def test_agent_pods_need_exactly_baseline() -> None:
    spec = pod(compiled(warmPoolSize=1))
    assert pss_violations(spec, "baseline") == []
    assert pss_violations(spec, "restricted"), "restricted refuses a root shim with added capabilities"
    assert lowest_level(spec) == AGENT_POD_SECURITY == "baseline"


# 8. Resources


def test_agent_pods_carry_requests_and_limits() -> None:
    spec = pod(compiled())
    assert spec["containers"][0]["resources"] == DEFAULT_AGENT_RESOURCES
    for container in spec["initContainers"]:
        assert container["resources"]["requests"] and container["resources"]["limits"]


def test_resources_are_overridable_in_kubernetes_shape() -> None:
    resources = {"requests": {"cpu": 1, "memory": "2Gi"}, "limits": {"memory": "8Gi", "ephemeral-storage": "4Gi"}}
    spec = pod(compiled(resources=resources))
    assert spec["containers"][0]["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"memory": "8Gi", "ephemeral-storage": "4Gi"},
    }


@pytest.mark.parametrize(
    ("resources", "words"),
    [
        ({"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}, "below its request"),
        ({"requests": {"cpu": "lots"}}, "quantity"),
        ({"limits": {"gpu": "1"}}, "expected cpu, memory"),
        ({"requests": {"cpu": "-1"}}, "quantity"),
    ],
)
def test_bad_resources_name_the_field(tmp_path: Path, resources: dict[str, Any], words: str) -> None:
    path = tmp_path / "agent.yaml"
    doc = agent().model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["spec"]["resources"] = resources
    path.write_text(dump_all([doc]))
    with pytest.raises(SpecError) as info:
        load_bundle([str(path)])
    assert info.value.field.startswith("spec.resources.") and words in info.value.message


# 9. Sandboxes' storage


def test_sandboxes_live_on_a_bounded_emptydir_not_dev_shm() -> None:
    spec = pod(compiled())
    container = spec["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CLRK_TEMP_ROOT"] == SANDBOX_DIR and not SANDBOX_DIR.startswith("/dev/shm")
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == SANDBOX_DIR]
    assert not mount.get("readOnly")
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["emptyDir"]["sizeLimit"] and volume["emptyDir"].get("medium") != "Memory"


# 6 and 10. Cluster domain and images


def test_cluster_domain_and_runtime_image_are_options() -> None:
    options = PlatformSettings(cluster_domain="corp.internal.", runtime_image="registry.corp/clrk-runtime:7").options()
    service = knative_service(agent(), ["cat"], options)
    env = {e["name"]: e["value"] for e in pod(service)["containers"][0]["env"]}
    assert env["CLRK_EGRESS_PROXY"] == "clrk-egress.clrk-system.svc.corp.internal:3128"
    assert pod(service)["initContainers"][0]["image"] == "registry.corp/clrk-runtime:7"
    default = {e["name"]: e["value"] for e in pod(compiled())["containers"][0]["env"]}
    assert default["CLRK_EGRESS_PROXY"] == "clrk-egress.clrk-system.svc.cluster.local:3128"


def test_cluster_domain_is_checked() -> None:
    with pytest.raises(ValueError, match="DNS domain"):
        PlatformSettings(cluster_domain="not a domain")


# 7. One ingress-side Service per agent, whatever its namespace


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("team", "bot"), ("other", "bot")),
        (("team-a", "bot"), ("team", "a-bot")),  # the same letters once joined with '-'
        (("a" * 63, "b" * 58), ("a" * 63, "b" * 57 + "c")),  # both cut to 63 characters
    ],
)
def test_ingress_service_names_never_collide(first: tuple[str, str], second: tuple[str, str]) -> None:
    one, two = ingress_service_name(*first), ingress_service_name(*second)
    assert one != two
    for name in (one, two):
        assert len(name) <= 63 and name[0].isalpha() and name[-1].isalnum()


def test_two_namespaces_with_the_same_agent_name(tmp_path: Path) -> None:
    docs = [agent(namespace=ns).model_dump(mode="json", by_alias=True, exclude_none=True) for ns in ("team", "ops")]
    path = tmp_path / "agents.yaml"
    path.write_text(dump_all(docs))
    services = [
        o for o in compile_bundle(load_bundle([str(path)])) if o["apiVersion"] == "v1" and o["kind"] == "Service"
    ]
    assert sorted(s["metadata"]["name"] for s in services) == ["clrk-ops-bot", "clrk-team-bot"]
    assert {s["metadata"]["annotations"]["clrk.dev/agent-ref"] for s in services} == {"team/bot", "ops/bot"}
    assert ingress_service(agent(namespace="team"))["metadata"]["labels"]["clrk.dev/namespace"] == "team"
