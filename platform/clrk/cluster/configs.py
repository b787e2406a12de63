"""The platform's install manifests (``platform/config``) as objects, and the few objects no file
may hold: the CA and the platform key, generated per cluster. Pure but for reading the
bundled files.

The files are kustomize-friendly: ``kubectl apply -k platform/config`` applies the same static
objects ``clrk install`` does, with the default images and cluster domain. ``clrk install`` uses
the CRDs generated from the models it ships with rather than the copies under ``crds/`` (a unit
test keeps the two equal), puts in the images and settings it was given
(:func:`install_objects`), and labels agent namespaces with the Pod Security level their pods need
(:func:`pod_security_labels`) and fences them (:func:`agent_namespace_objects`).

The gateway needs no Kubernetes API: it reads only files mounted into its pod (the CA key, the
platform key, its merged configuration, and the provider-key Secrets its injections name, which
:func:`gateway_secrets` projects into its ``secrets`` volume whenever that configuration is
rewritten). Its pod mounts no service-account token.

Async invocations: Redis (``redis.yaml``) behind the password of Secret ``clrk-redis``
(:func:`redis_secret`, generated once per cluster, with a copy for the ingress:
:func:`redis_password_copy`), and Knative Eventing's Broker and Trigger (``eventing.yaml``); the
ingress's broker and Redis URLs name the cluster domain (:func:`install_objects` writes it in).
"""

from __future__ import annotations

import copy
import datetime
import ipaddress
import secrets
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clrk.api.crds import all_crds
from clrk.errors import ClusterError
from clrk.manifests.documents import load_all
from clrk.manifests.options import ClusterOptions, default_image
from clrk.manifests.policies import SYSTEM_NAMESPACE
from clrk.manifests.tenancy import agent_ingress_policy, agent_keys_secret, callback_secret

__all__ = [
    "AGENT_POD_SECURITY",
    "POD_SECURITY_ENFORCE",
    "REDIS_SECRET",
    "RESERVED_SECRETS",
    "agent_namespace_objects",
    "ca_objects",
    "config_dir",
    "gateway_secrets",
    "install_objects",
    "knative_defaults",
    "knative_features",
    "platform_key_secret",
    "pod_security_labels",
    "redis_password_copy",
    "redis_secret",
    "rendered_namespace_objects",
]

_LABELS = {"app.kubernetes.io/part-of": "clrk", "app.kubernetes.io/managed-by": "clrk"}
POD_SECURITY_ENFORCE = "pod-security.kubernetes.io/enforce"
AGENT_POD_SECURITY = "baseline"
"""The lowest Pod Security Standard that admits an agent pod: its shim runs as root with SETUID,
SETGID, KILL, CHOWN, FOWNER and DAC_OVERRIDE added, all on baseline's list of allowed
capabilities; ``restricted`` refuses root and every added capability but NET_BIND_SERVICE."""
_ADMITTING = ("privileged", "baseline")
REDIS_SECRET = "clrk-redis"  # noqa: S105 (a Secret's name)


def config_dir() -> Path:
    """``clrk/_config`` in a wheel, ``platform/config`` in a checkout."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "_config", package.parent / "config"):
        if (candidate / "kustomization.yaml").is_file():
            return candidate
    raise ClusterError(f"clrk's install manifests are missing (looked in {package / '_config'}): reinstall clrk")


def _documents(path: Path) -> list[dict[str, Any]]:
    return load_all(path.read_text(encoding="utf-8"))


@cache
def _install_objects() -> tuple[dict[str, Any], ...]:
    folder = config_dir()
    kustomization = _documents(folder / "kustomization.yaml")[0]
    out: list[dict[str, Any]] = list(all_crds())
    for entry in kustomization["resources"]:
        if not str(entry).startswith("crds/"):
            out += _documents(folder / entry)
    return tuple(out)


def _set_env(container: dict[str, Any], name: str, value: str) -> None:
    env = [var for var in container.get("env") or [] if var.get("name") != name]
    container["env"] = [*env, {"name": name, "value": value}]


def _with_domain(container: dict[str, Any], cluster_domain: str) -> None:
    """``svc.cluster.local`` in the URLs the files hold, as ``svc.<cluster_domain>``."""
    for var in container.get("env") or []:
        if "value" in var and ".svc.cluster.local" in var["value"]:
            var["value"] = var["value"].replace(".svc.cluster.local", f".svc.{cluster_domain}")


def install_objects(options: ClusterOptions | None = None) -> list[dict[str, Any]]:
    """Every static object of the platform, CRDs first, in the kustomization's order, with the
    images and cluster domain of ``options`` (as a kustomize ``images:`` entry and an env patch
    would set them): the ingress and the operator get ``CLRK_CLUSTER_DOMAIN``, the operator also
    ``CLRK_RUNTIME_IMAGE`` (it compiles agents as ``clrk apply`` does); the broker and Redis URLs
    of the ingress and the gateway name the cluster domain."""
    options = options or ClusterOptions()
    images = {default_image("ingress"): options.ingress_image, default_image("egress"): options.egress_image}
    out = copy.deepcopy(list(_install_objects()))
    for body in out:
        if body["kind"] != "Deployment":
            continue
        name, pod = body["metadata"]["name"], body["spec"]["template"]["spec"]
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            container["image"] = images.get(container["image"], container["image"])
        for container in pod["containers"]:
            _with_domain(container, options.cluster_domain)
            if name in ("clrk-ingress", "clrk-operator"):
                _set_env(container, "CLRK_CLUSTER_DOMAIN", options.cluster_domain)
            if name == "clrk-operator":
                _set_env(container, "CLRK_RUNTIME_IMAGE", options.runtime_image)
    return out


def _knative_configmap(name: str) -> dict[str, Any]:
    for body in _documents(config_dir() / "knative-features.yaml"):
        if body["metadata"]["name"] == name:
            return body
    raise ClusterError(f"clrk's install manifests are incomplete: no {name} in knative-features.yaml; reinstall clrk")


def knative_features() -> dict[str, Any]:
    """The keys of Knative Serving's ``config-features`` that the compiled agent pods need."""
    return _knative_configmap("config-features")


def knative_defaults() -> dict[str, Any]:
    """The key of Knative Serving's ``config-defaults`` an async run needs: the longest revision
    timeout, raised to :data:`~clrk_runtime.protocol.invocations.MAX_ASYNC_TIMEOUT_S`."""
    return _knative_configmap("config-defaults")


def agent_namespace_objects(
    namespace: str, dns_addresses: Iterable[str] = (), options: ClusterOptions | None = None
) -> list[dict[str, Any]]:
    """The NetworkPolicies of a namespace holding TaskAgents (besides, there, the copied CA and
    the namespace's keys): ``clrk-agents`` fences what agent pods send (``dns_addresses``, the
    kube-dns Service's ClusterIP, which NodeLocal DNSCache answers on in its iptables mode, join
    its DNS rule); ``clrk-agents-ingress`` says who may connect to them."""
    out = _documents(config_dir() / "agent-namespace.yaml")
    for body in out:
        body["metadata"]["namespace"] = namespace
        if body["kind"] == "NetworkPolicy":
            dns = body["spec"]["egress"][-1]["to"]
            for address in dns_addresses:
                ip = ipaddress.ip_address(address)
                dns.append({"ipBlock": {"cidr": f"{ip}/{ip.max_prefixlen}"}})
    return [*out, agent_ingress_policy(namespace, options or ClusterOptions())]


def rendered_namespace_objects(namespaces: Iterable[str], options: ClusterOptions) -> list[dict[str, Any]]:
    """What ``clrk render`` shows of each agent namespace's own objects, which ``clrk apply`` and
    the operator write: the NetworkPolicies and the keys Secret, without data (no cluster is
    read, so there is no platform key to derive them from)."""
    out: list[dict[str, Any]] = []
    for namespace in sorted(set(namespaces)):
        out += agent_namespace_objects(namespace, (), options)
        out.append(agent_keys_secret(namespace, None, options))
        out.append(callback_secret(namespace, None, options))
    return out


def pod_security_labels(namespace: str, labels: dict[str, str]) -> dict[str, str]:
    """The Pod Security labels to apply to an agent namespace whose labels are ``labels``: none
    when it already enforces a level that admits agent pods, ``enforce: baseline`` when it
    enforces none; a ClusterError when it enforces ``restricted`` (which no agent pod passes)."""
    level = labels.get(POD_SECURITY_ENFORCE)
    if level is None:
        return {POD_SECURITY_ENFORCE: AGENT_POD_SECURITY}
    if level in _ADMITTING:
        return {}
    raise ClusterError(
        f"namespace {namespace} enforces the {level!r} Pod Security level, which refuses agent pods "
        f"(their shim runs as root with added capabilities): they need {AGENT_POD_SECURITY!r}; "
        f"`kubectl label namespace {namespace} {POD_SECURITY_ENFORCE}={AGENT_POD_SECURITY} --overwrite`, "
        "or put the agents in another namespace"
    )


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def ca_objects(now: datetime.datetime | None = None) -> list[dict[str, Any]]:
    """A fresh CA for the egress gateway: its key (and certificate, in mitmproxy's one-file form)
    in Secret ``clrk-ca-key``; the certificate, alone and appended to the public roots, in
    ConfigMap ``clrk-ca`` (key ``ca-bundle.crt``) for agent pods to trust."""
    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("clrk egress CA"))
        .issuer_name(_name("clrk egress CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    roots = Path(certifi.where()).read_text(encoding="utf-8")
    meta = {"namespace": SYSTEM_NAMESPACE, "labels": _LABELS}
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "clrk-ca-key", **meta},
            "type": "Opaque",
            "stringData": {"mitmproxy-ca.pem": key_pem + cert_pem, "mitmproxy-ca-cert.pem": cert_pem},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "clrk-ca", **meta},
            "data": {"ca.crt": cert_pem, "ca-bundle.crt": roots.rstrip("\n") + "\n" + cert_pem},
        },
    ]


def platform_key_secret(options: ClusterOptions | None = None) -> dict[str, Any]:
    """The platform's one key (32 random bytes as hex, key ``key``), in clrk-system only: the
    ingress signs requests and the gateway checks proxy tokens with keys derived from it per
    namespace; ``clrk apply`` and the operator derive each agent namespace's keys from it."""
    name = (options or ClusterOptions()).platform_key_secret
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE, "labels": _LABELS},
        "type": "Opaque",
        "stringData": {"key": secrets.token_hex(32)},
    }


def redis_secret() -> dict[str, Any]:
    """Redis's password (32 random bytes as hex: safe in a URL), in clrk-system: ``password`` for
    clients (the gateway), ``auth.conf`` for the server (``requirepass``, read with ``--include``,
    so the password is in no process's arguments)."""
    password = secrets.token_hex(32)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": REDIS_SECRET, "namespace": SYSTEM_NAMESPACE, "labels": _LABELS},
        "type": "Opaque",
        "stringData": {"password": password, "auth.conf": f"requirepass {password}\n"},
    }


def redis_password_copy(original: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The ``password`` key of Secret clrk-redis (``original``, as read from clrk-system) in
    ``namespace`` (the ingress's: a pod mounts only its own namespace's Secrets)."""
    data = original.get("data") or {}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": REDIS_SECRET, "namespace": namespace, "labels": _LABELS},
        "type": "Opaque",
        "data": {"password": data["password"]} if "password" in data else {},
    }


RESERVED_SECRETS = frozenset({"clrk-ca-key", "clrk-platform-key", "clrk-egress-token", REDIS_SECRET})
"""The platform's own Secrets in clrk-system, never projected into the gateway's ``secrets``
volume (an injection naming one would send the CA key or the platform key upstream)."""


def gateway_secrets(injections: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The gateway Deployment's ``secrets`` volume, as much of the Deployment as server-side
    apply needs to set it: one projected source per Secret the ``injections`` (of the merged
    egress configuration) name, each of its keys at ``<Secret>/<key>`` (where the gateway reads
    it), ``optional`` so that the pod starts before the Secret exists. Secrets live in
    clrk-system (a pod mounts only its own namespace's); :data:`RESERVED_SECRETS` never."""
    wanted: dict[str, set[str]] = {}
    for injection in injections:
        ref = injection.get("secret") or {}
        name, key = str(ref.get("name", "")), str(ref.get("key", ""))
        if name and key and name not in RESERVED_SECRETS:
            wanted.setdefault(name, set()).add(key)
    sources = [
        {
            "secret": {
                "name": name,
                "optional": True,
                "items": [{"key": key, "path": f"{name}/{key}"} for key in sorted(keys)],
            }
        }
        for name, keys in sorted(wanted.items())
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "clrk-egress", "namespace": SYSTEM_NAMESPACE},
        "spec": {
            "template": {
                "spec": {
                    "volumes": [{"name": "secrets", "projected": {"defaultMode": 0o440, "sources": sources}}],
                }
            }
        },
    }
