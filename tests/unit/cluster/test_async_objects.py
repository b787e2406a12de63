"""The install manifests for async invocations: the Broker and Trigger as Knative reads them (checked
against its own CRD schemas), Redis fenced and password-protected, and the ingress pointed at
both; Knative Serving's longest revision timeout raised to an async run's."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import jsonschema

from clrk.cluster.configs import (
    REDIS_SECRET,
    RESERVED_SECRETS,
    install_objects,
    knative_defaults,
    redis_password_copy,
    redis_secret,
)
from clrk.ingress.brokering import ACCEPTED_EVENT_TYPE
from clrk.ingress.worker import DEAD_LETTER_PATH, RUNS_PATH
from clrk.manifests.compiling import KNATIVE_MAX_TIMEOUT_S, KNATIVE_TIMEOUT_MARGIN_S
from clrk.manifests.documents import load_all
from clrk.manifests.options import ClusterOptions
from clrk_runtime.protocol.invocations import MAX_ASYNC_TIMEOUT_S

CRDS = Path(__file__).resolve().parents[3] / "tests" / "data" / "crds"
INGRESS_SERVICE = {"apiVersion": "v1", "kind": "Service", "name": "clrk-ingress", "namespace": "clrk"}


def _one(kind: str, name: str, objects: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    (body,) = [o for o in objects or install_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    return body


def _seconds(iso: str) -> float:
    """An ISO 8601 duration of hours, minutes and seconds (what Knative's ``timeout`` takes)."""
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?", iso)
    assert match, iso
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _schema(filename: str) -> dict[str, Any]:
    """The upstream CRD's v1 schema, closed where the API server would prune unknown fields."""

    def strict(node: Any) -> Any:
        if isinstance(node, list):
            return [strict(n) for n in node]
        if not isinstance(node, dict):
            return node
        out = {k: strict(v) for k, v in node.items()}
        if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out

    crd = load_all((CRDS / filename).read_text())[0]
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    root = version["schema"]["openAPIV3Schema"]
    root["properties"].update(apiVersion={"type": "string"}, kind={"type": "string"}, metadata={"type": "object"})
    return strict(root)  # type: ignore[no-any-return]


def test_broker_and_trigger_validate_against_knatives_schemas() -> None:
    jsonschema.validate(_one("Broker", "clrk-invocations"), _schema("knative-eventing-broker.yaml"))
    jsonschema.validate(_one("Trigger", "clrk-invocations"), _schema("knative-eventing-trigger.yaml"))


def test_the_trigger_delivers_accepted_runs_to_the_worker_routes() -> None:
    trigger = _one("Trigger", "clrk-invocations")
    spec = trigger["spec"]
    assert trigger["metadata"]["namespace"] == "clrk" and spec["broker"] == "clrk-invocations"
    assert spec["filter"] == {"attributes": {"type": ACCEPTED_EVENT_TYPE}}
    assert spec["subscriber"] == {"ref": INGRESS_SERVICE, "uri": RUNS_PATH}
    delivery = spec["delivery"]
    assert delivery["deadLetterSink"] == {"ref": INGRESS_SERVICE, "uri": DEAD_LETTER_PATH}
    assert delivery["backoffPolicy"] == "exponential" and delivery["retry"] >= 5
    # A delivery is held as long as its run: the longest async run, and some grace.
    assert _seconds(delivery["timeout"]) > MAX_ASYNC_TIMEOUT_S
    broker = _one("Broker", "clrk-invocations")
    assert _seconds(broker["spec"]["delivery"]["timeout"]) > MAX_ASYNC_TIMEOUT_S, "the channel waits on the filter"


def test_the_ingress_is_pointed_at_the_broker_and_redis_in_the_cluster_domain() -> None:
    objects = install_objects(ClusterOptions(cluster_domain="corp.internal"))
    ingress = _one("Deployment", "clrk-ingress", objects)
    pod = ingress["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    broker = _one("Broker", "clrk-invocations", objects)
    path = f"/{broker['metadata']['namespace']}/{broker['metadata']['name']}"
    assert env["CLRK_INGRESS_BROKER_URL"] == f"http://broker-ingress.knative-eventing.svc.corp.internal{path}"
    assert env["CLRK_INGRESS_REDIS_URL"] == "redis://clrk-redis.clrk-system.svc.corp.internal:6379/0"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    password_dir = env["CLRK_INGRESS_REDIS_PASSWORD_FILE"].rsplit("/", 1)[0]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mounts[password_dir]]
    assert volume["secret"]["secretName"] == REDIS_SECRET
    assert ingress["spec"]["replicas"] >= 2, "a lost replica's runs go to another"
    egress = _one("Deployment", "clrk-egress", objects)
    (gateway,) = egress["spec"]["template"]["spec"]["containers"]
    gateway_env = {e["name"]: e["value"] for e in gateway["env"]}
    assert gateway_env["CLRK_EGRESS_REDIS_URL"] == "redis://clrk-redis.clrk-system.svc.corp.internal:6379/0"
    gateway_mounts = {m["name"]: m["mountPath"] for m in gateway["volumeMounts"]}
    (redis,) = [v for v in egress["spec"]["template"]["spec"]["volumes"] if v["name"] == "redis"]
    assert redis["secret"]["secretName"] == REDIS_SECRET and redis["secret"]["items"] == [
        {"key": "password", "path": "password"}
    ]
    # The password is read from the mounted file: in no manifest, no argument, no URL.
    assert gateway_env["CLRK_EGRESS_REDIS_PASSWORD_FILE"] == f"{gateway_mounts['redis']}/password"
    assert "command" not in gateway, "the image's own entrypoint runs the gateway"


def test_redis_is_pinned_password_protected_and_reachable_only_from_ingress_and_gateway() -> None:
    redis = _one("Deployment", "clrk-redis")
    pod = redis["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "redis:7.4-alpine"
    args = container["args"]
    auth = args[args.index("--include") + 1]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (secret,) = [v["secret"] for v in pod["volumes"] if "secret" in v]
    assert secret["secretName"] == REDIS_SECRET and auth == f"{mounts['auth']}/auth.conf"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction", "runs are never evicted silently"
    assert args[args.index("--appendonly") + 1] == "yes"
    assert pod["automountServiceAccountToken"] is False
    policy = _one("NetworkPolicy", "clrk-redis")
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "clrk-redis"}}
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    assert rule["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "clrk"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "clrk-ingress"}},
        },
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "clrk-egress"}}},  # its own namespace
    ]
    assert "password" not in str([o for o in install_objects() if o["kind"] == "Secret"])


def test_the_redis_secret_is_fresh_and_only_the_password_is_copied() -> None:
    first, second = redis_secret(), redis_secret()
    password = first["stringData"]["password"]
    assert re.fullmatch(r"[0-9a-f]{64}", password) and password != second["stringData"]["password"]
    assert first["stringData"]["auth.conf"] == f"requirepass {password}\n"
    assert first["metadata"]["namespace"] == "clrk-system" and REDIS_SECRET in RESERVED_SECRETS
    stored = {"data": {k: base64.b64encode(v.encode()).decode() for k, v in first["stringData"].items()}}
    copy = redis_password_copy(stored, "clrk")
    assert copy["metadata"]["namespace"] == "clrk" and copy["data"] == {"password": stored["data"]["password"]}


def test_knative_serving_lets_a_revision_run_as_long_as_an_async_run() -> None:
    defaults = knative_defaults()
    assert defaults["metadata"] == {"name": "config-defaults", "namespace": "knative-serving"}
    assert defaults["data"] == {"max-revision-timeout-seconds": str(KNATIVE_MAX_TIMEOUT_S)}
    assert KNATIVE_MAX_TIMEOUT_S >= MAX_ASYNC_TIMEOUT_S + KNATIVE_TIMEOUT_MARGIN_S, "the longest agent deploys"
