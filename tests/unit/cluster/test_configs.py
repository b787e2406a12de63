"""The install manifests: kustomize-friendly, in sync with the models, the CA split right."""

from __future__ import annotations

from pathlib import Path

from clrk.api.crds import all_crds, crd_filename
from clrk.cluster.configs import agent_namespace_objects, ca_objects, config_dir, install_objects, knative_features
from clrk.manifests.documents import load_all

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


def test_only_the_egress_mounts_secrets() -> None:
    for body in install_objects():
        if body["kind"] != "Deployment":
            continue
        volumes = body["spec"]["template"]["spec"].get("volumes", [])
        has_secret = any("secret" in v for v in volumes)
        assert has_secret == (body["metadata"]["name"] == "clrk-egress"), body["metadata"]["name"]


def test_knative_flags_the_compiled_pods_need() -> None:
    data = knative_features()["data"]
    assert data == {
        "kubernetes.podspec-init-containers": "enabled",
        "kubernetes.containerspec-addcapabilities": "enabled",
        "kubernetes.podspec-securitycontext": "enabled",
        "kubernetes.podspec-emptydir": "enabled",
    }


def test_agent_pods_reach_only_egress_and_dns() -> None:
    (policy,) = agent_namespace_objects("team")
    assert policy["metadata"]["namespace"] == "team" and policy["spec"]["policyTypes"] == ["Egress"]
    ports = [p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]]
    assert ports == [3128, 53, 53]


def test_ca_key_stays_in_the_secret() -> None:
    secret, configmap = ca_objects()
    assert secret["kind"] == "Secret" and "PRIVATE KEY" in secret["stringData"]["mitmproxy-ca.pem"]
    assert configmap["metadata"]["name"] == "clrk-ca" and configmap["metadata"]["namespace"] == "clrk-system"
    assert "PRIVATE KEY" not in str(configmap["data"])
    assert configmap["data"]["ca-bundle.crt"].endswith(configmap["data"]["ca.crt"])
