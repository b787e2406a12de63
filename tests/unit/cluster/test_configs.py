"""The install manifests: kustomize-friendly, in sync with the models, the CA split right."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clrk.api.crds import all_crds, crd_filename
from clrk.cluster.configs import (
    POD_SECURITY_ENFORCE,
    agent_namespace_objects,
    ca_objects,
    config_dir,
    install_objects,
    knative_features,
    pod_security_labels,
)
from clrk.cluster.settings import platform_configmap, recorded_settings
from clrk.errors import ClusterError
from clrk.manifests.documents import load_all
from clrk.manifests.options import ClusterOptions, PlatformSettings, default_image
from tests.support.podsecurity import pss_violations

CONFIG = Path(__file__).resolve().parents[3] / "platform" / "config"


def test_kustomization_lists_every_resource_file_and_they_exist() -> None:
    kustomization = load_all((CONFIG / "kustomization.yaml").read_text())[0]
    listed = set(kustomization["resources"])
    assert {f"crds/{crd_filename(c)}" for c in all_crds()} <= listed
    assert all((CONFIG / entry).is_file() for entry in listed)
    templates = {"kustomization.yaml", "knative-features.yaml", "agent-namespace.yaml"}
    assert {p.name for p in CONFIG.glob("*.yaml")} - templates == {e for e in listed if "/" not in e}
    assert config_dir() == CONFIG


def test_install_objects_start_with_the_generated_crds() -> None:
    objects = install_objects()
    assert objects[: len(all_crds())] == all_crds()
    names = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objects}
    assert {
        ("Namespace", "", "clrk-system"),
        ("Namespace", "", "clrk"),
        ("Deployment", "clrk", "clrk-ingress"),
        ("Deployment", "clrk-system", "clrk-egress"),
        ("Service", "clrk-system", "clrk-egress"),
    } <= names
    ingress = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "clrk-ingress")
    assert ingress["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "clrk-ingress"
    assert ingress["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 8080


def test_only_the_gateway_and_the_ingress_mount_secrets_and_only_their_own() -> None:
    mounted = {}
    for body in install_objects():
        if body["kind"] != "Deployment":
            continue
        volumes = body["spec"]["template"]["spec"].get("volumes", [])
        mounted[body["metadata"]["name"]] = {v["secret"]["secretName"] for v in volumes if "secret" in v}
    assert mounted == {
        "clrk-egress": {"clrk-ca-key", "clrk-platform-key", "clrk-redis"},
        "clrk-ingress": {"clrk-platform-key", "clrk-redis"},
        "clrk-operator": set(),
        "clrk-redis": {"clrk-redis"},
    }


def test_knative_flags_the_compiled_pods_need() -> None:
    data = knative_features()["data"]
    assert data == {
        "kubernetes.podspec-init-containers": "enabled",
        "kubernetes.containerspec-addcapabilities": "enabled",
        "kubernetes.podspec-securitycontext": "enabled",
        "kubernetes.podspec-emptydir": "enabled",
    }


def test_agent_pods_reach_only_egress_and_dns() -> None:
    policy, _ingress = agent_namespace_objects("team")
    assert policy["metadata"]["namespace"] == "team" and policy["spec"]["policyTypes"] == ["Egress"]
    gateway, dns = policy["spec"]["egress"]
    assert all(rule.get("to") and rule.get("ports") for rule in (gateway, dns)), "no rule opens everything"
    assert [(p["port"], p["protocol"]) for p in gateway["ports"]] == [(3128, "TCP")]
    assert gateway["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "clrk-system"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "clrk-egress"}},
        }
    ]
    # 53 and OpenShift's 5353, each over UDP and TCP; and only to DNS servers.
    assert sorted((p["port"], p["protocol"]) for p in dns["ports"]) == [
        (53, "TCP"), (53, "UDP"), (5353, "TCP"), (5353, "UDP"),
    ]  # fmt: skip
    peers = dns["to"]
    assert {"ipBlock": {"cidr": "169.254.20.10/32"}} in peers, "NodeLocal DNSCache"
    assert {"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}} in peers
    openshift = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "openshift-dns"}},
        "podSelector": {"matchLabels": {"dns.operator.openshift.io/daemonset-dns": "default"}},
    }
    assert openshift in peers
    assert len(peers) == 3, "DNS servers only"


def test_the_kube_dns_cluster_ip_joins_the_dns_peers() -> None:
    policy, _ingress = agent_namespace_objects("team", ["10.96.0.10", "fd00::a"])
    peers = policy["spec"]["egress"][-1]["to"]
    assert {"ipBlock": {"cidr": "10.96.0.10/32"}} in peers and {"ipBlock": {"cidr": "fd00::a/128"}} in peers


def test_ca_key_stays_in_the_secret() -> None:
    secret, configmap = ca_objects()
    assert secret["kind"] == "Secret" and "PRIVATE KEY" in secret["stringData"]["mitmproxy-ca.pem"]
    assert configmap["metadata"]["name"] == "clrk-ca" and configmap["metadata"]["namespace"] == "clrk-system"
    assert "PRIVATE KEY" not in str(configmap["data"])
    assert configmap["data"]["ca-bundle.crt"].endswith(configmap["data"]["ca.crt"])


def _deployments(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}


def test_read_only_root_filesystems_get_a_writable_tmp() -> None:
    """The kubernetes client's DynamicClient calls tempfile.gettempdir() at start (the ingress and
    the operator): under readOnlyRootFilesystem it needs a writable /tmp, and TMPDIR says where."""
    for name, body in _deployments(install_objects()).items():
        pod = body["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            if not container["securityContext"].get("readOnlyRootFilesystem"):
                continue
            mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{name}/{container['name']}: no writable /tmp"
            tmp = volumes[mounts["/tmp"]["name"]]
            assert tmp["emptyDir"]["sizeLimit"] and not mounts["/tmp"].get("readOnly")
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env.get("TMPDIR") == "/tmp", f"{name}/{container['name']}"
    assert {"clrk-ingress", "clrk-operator", "clrk-egress"} <= set(_deployments(install_objects()))


def test_the_static_images_are_the_defaults_and_install_sets_them() -> None:
    images = {c["image"] for body in _deployments(install_objects()).values() for c in _all_containers(body)}
    assert images == {default_image("ingress"), default_image("egress"), "redis:7.4-alpine"}, "the defaults"
    options = ClusterOptions(
        runtime_image="reg.corp/runtime:1", ingress_image="reg.corp/ingress:1", egress_image="reg.corp/egress:1",
        cluster_domain="corp.internal",
    )  # fmt: skip
    found = _deployments(install_objects(options))
    assert {c["image"] for c in _all_containers(found["clrk-egress"])} == {"reg.corp/egress:1"}
    assert {c["image"] for c in _all_containers(found["clrk-ingress"])} == {"reg.corp/ingress:1"}
    assert {c["image"] for c in _all_containers(found["clrk-operator"])} == {"reg.corp/ingress:1"}
    ingress_env = _env(found["clrk-ingress"])
    operator_env = _env(found["clrk-operator"])
    assert ingress_env["CLRK_CLUSTER_DOMAIN"] == operator_env["CLRK_CLUSTER_DOMAIN"] == "corp.internal"
    assert operator_env["CLRK_RUNTIME_IMAGE"] == "reg.corp/runtime:1"
    assert ingress_env["CLRK_INGRESS_AUTH"] == "keys", "the files' own settings stay"
    assert platform_configmap(options)["data"] == {
        "clusterDomain": "corp.internal",
        "runtimeImage": "reg.corp/runtime:1",
        "ingressImage": "reg.corp/ingress:1",
        "egressImage": "reg.corp/egress:1",
        "knativeNamespace": "knative-serving",
        "knativeGatewayNamespace": "kourier-system",
    }
    assert recorded_settings(platform_configmap(options)) == {
        "cluster_domain": "corp.internal",
        "runtime_image": "reg.corp/runtime:1",
        "ingress_image": "reg.corp/ingress:1",
        "egress_image": "reg.corp/egress:1",
        "knative_namespace": "knative-serving",
        "knative_gateway_namespace": "kourier-system",
    }


def test_settings_layer_flags_over_the_record_over_defaults() -> None:
    recorded = {"runtime_image": "reg.corp/runtime:1", "cluster_domain": "corp.internal"}
    options = PlatformSettings(cluster_domain="other.example").options(recorded)
    assert (options.runtime_image, options.cluster_domain) == ("reg.corp/runtime:1", "other.example")
    assert options.ingress_image == default_image("ingress")
    assert PlatformSettings().options().cluster_domain == "cluster.local"


def test_the_platforms_pods_meet_restricted_and_their_namespaces_enforce_it() -> None:
    objects = install_objects()
    for name, body in _deployments(objects).items():
        assert pss_violations(body["spec"]["template"]["spec"], "restricted") == [], name
    for body in objects:
        if body["kind"] == "Namespace":
            assert body["metadata"]["labels"][POD_SECURITY_ENFORCE] == "restricted"


def test_agent_namespaces_get_the_level_their_pods_need() -> None:
    assert pod_security_labels("team", {}) == {POD_SECURITY_ENFORCE: "baseline"}
    assert pod_security_labels("team", {POD_SECURITY_ENFORCE: "privileged"}) == {}, "never tightened"
    assert pod_security_labels("team", {POD_SECURITY_ENFORCE: "baseline"}) == {}
    with pytest.raises(ClusterError, match=r"namespace team enforces the 'restricted'.*kubectl label namespace team"):
        pod_security_labels("team", {POD_SECURITY_ENFORCE: "restricted"})


def test_the_ingress_gets_no_secret_from_its_cluster_role() -> None:
    # Callers' Secrets: a Role per namespace, by name (tests/unit/cluster/test_grants.py).
    role = next(o for o in install_objects() if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "clrk-ingress")
    assert [r for r in role["rules"] if "secrets" in r["resources"]] == []


def test_the_egress_config_the_gateway_mounts_is_required() -> None:
    egress = _deployments(install_objects())["clrk-egress"]
    (config,) = [v for v in egress["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"]
    assert config["configMap"] == {"name": "clrk-egress-config"}, "install creates it; no silent empty mount"


def _all_containers(body: dict[str, Any]) -> list[dict[str, Any]]:
    pod = body["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def _env(body: dict[str, Any]) -> dict[str, str]:
    (container,) = body["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container.get("env", [])}
