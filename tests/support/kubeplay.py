"""Rendered Kubernetes objects run by podman, as a cluster would run them.

:meth:`Objects.deployment` turns a Deployment's pod template, and :meth:`Objects.knative_service`
a Knative Service's revision template, into the Pod a cluster makes of it, with what that Pod
refers to (Secrets, ConfigMaps, the Services that select it) taken from the same objects, which
are what the API server holds after ``clrk install`` and ``clrk apply`` (:func:`snapshot`). The
containers, commands, arguments, environment, users, capabilities, read-only root filesystems and
volumes are the rendered ones. What a cluster adds around a Pod, and how each is stood in for:

- kubelet: the service account's token, CA and namespace at
  ``/var/run/secrets/kubernetes.io/serviceaccount`` (a token the test API server was started with
  for that account: :class:`tests.support.envtest.EnvTest`), unless the pod opts out; and
  ``KUBERNETES_SERVICE_HOST``/``_PORT`` in every container (here: where that API server listens).
- ``fsGroup``: kubelet adds it to every container's groups; podman 4.3 does not, but honours
  ``supplementalGroups``, where it is added.
- Secret and projected volumes: files written on the host with the owner, group and mode kubelet
  gives them (root, the fsGroup, ``defaultMode`` with group read added under an fsGroup), mounted
  read-only (hostPath). podman 4.3.1's own Secret support cannot be used: a Secret document is
  stored as YAML and read back as JSON (env: "not valid JSON"), a secret volume without
  ``optional`` crashes ``kube play`` (containers/podman#16636) and one with ``optional: true`` is
  never mounted, ``data`` is written without base64 decoding, ``defaultMode`` is ignored, and
  projected volumes are not supported.
- ConfigMaps: ``kube play``'s own (documents in the same file), which works; each is renamed
  after the pod (``<pod>-<name>``), since podman keeps a ConfigMap volume on the host under the
  ConfigMap's name, shared by every pod and session that plays one of that name.
- Services: each Service that selects the pod becomes a network alias
  ``<name>.<namespace>.svc.<cluster domain>`` (aardvark-dns answers it on the podman network).
  Ports are not translated: a caller reaches the pod's own ports.
- Knative Serving: the revision template becomes the Pod, its user container getting ``PORT``,
  ``K_SERVICE``, ``K_CONFIGURATION`` and ``K_REVISION`` as Knative sets them. Knative adds a
  queue-proxy container, which does not run here: ``containerConcurrency``, ``timeoutSeconds`` and
  ``responseStartTimeoutSeconds`` (which it enforces) are dropped, and the Service's address
  answers on port 80 through a socat sidecar to the user container's port, standing in for the
  activator/queue-proxy path.
- Probes are dropped (kubelet runs them, and for a revision the queue-proxy): tests poll the same
  paths themselves.
- Container ``ports`` are dropped: podman 4.3's ``kube play`` publishes each ``containerPort`` on
  the host (0.0.0.0) when no ``hostPort`` is given, where Kubernetes only records them; the pods
  are reached on the network at their addresses.
- Images: each is looked up in the map given (a registry name → a locally built image).
"""

from __future__ import annotations

import base64
import copy
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clrk.cluster import Cluster

__all__ = ["SERVICE_ACCOUNT_DIR", "Objects", "Workload", "snapshot"]

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_KINDS = [
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "Secret"),
    ("v1", "ConfigMap"),
    ("serving.knative.dev/v1", "Service"),
]
_KNATIVE_ONLY = ("containerConcurrency", "timeoutSeconds", "responseStartTimeoutSeconds", "idleTimeoutSeconds")
_PROBES = ("readinessProbe", "livenessProbe", "startupProbe")
_SECRET_MODE = 0o644  # Kubernetes' defaultMode for secret and projected volumes


def snapshot(cluster: Cluster) -> list[dict[str, Any]]:
    """Every Deployment, Service, Secret, ConfigMap and Knative Service the API server holds."""
    out = []
    for api_version, kind in _KINDS:
        resource = cluster.resource(api_version, kind)
        with cluster.calling(f"list {kind}"):
            items = resource.get().to_dict().get("items", [])
        out += [{**item, "apiVersion": api_version, "kind": kind} for item in items]
    return out


@dataclass
class Workload:
    """One Pod to play: its manifest, the ConfigMaps it uses, the names it answers to."""

    pod: dict[str, Any]
    documents: list[dict[str, Any]] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])

    def container(self, name: str) -> dict[str, Any]:
        spec = self.pod["spec"]
        (found,) = [c for c in [*spec.get("initContainers", []), *spec["containers"]] if c["name"] == name]
        return found

    def mount_host_folder(self, container: str, folder: Path, path: str) -> None:
        """Add ``folder`` of the host, read-only at ``path`` of ``container`` (a test seam)."""
        volume = f"host-{len(self.pod['spec'].get('volumes', []))}"
        self.pod["spec"].setdefault("volumes", []).append(
            {"name": volume, "hostPath": {"path": str(folder), "type": "Directory"}}
        )
        mounts = self.container(container).setdefault("volumeMounts", [])
        mounts.append({"name": volume, "mountPath": path, "readOnly": True})


@dataclass
class Objects:
    """The objects a cluster holds, and what stands in here for the rest of the cluster."""

    items: list[dict[str, Any]]
    workdir: Path
    """Where the files of Secret, projected and service-account volumes are written."""
    images: Mapping[str, str] = field(default_factory=dict)
    """Image names as rendered → the local images to run instead."""
    cluster_domain: str = "cluster.local"
    api_server: tuple[str, int] | None = None
    """Where pods reach the API server (``KUBERNETES_SERVICE_HOST``/``_PORT``)."""
    api_ca: Path | None = None
    tokens: Mapping[tuple[str, str], str] = field(default_factory=dict)
    """Service-account tokens the API server accepts, by ``(namespace, name)``."""
    router_image: str = ""
    """An image with socat: the stand-in for Knative's routing to a revision's port."""

    def find(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        for body in self.items:
            meta = body["metadata"]
            if (body["apiVersion"], body["kind"], meta.get("namespace"), meta["name"]) == (
                api_version,
                kind,
                namespace,
                name,
            ):
                return body
        return None

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        found = self.find(api_version, kind, namespace, name)
        assert found is not None, f"no {kind} {namespace}/{name} among the objects"
        return found

    def deployment(self, namespace: str, name: str, suffix: str) -> Workload:
        """The Pod a ReplicaSet of Deployment ``namespace/name`` makes, named ``name-suffix``."""
        body = self.get("apps/v1", "Deployment", namespace, name)
        return self._workload(namespace, f"{name}-{suffix}", body["spec"]["template"])

    def knative_service(self, namespace: str, name: str, suffix: str) -> Workload:
        """The Pod of the first revision of Knative Service ``namespace/name``."""
        body = self.get("serving.knative.dev/v1", "Service", namespace, name)
        template = copy.deepcopy(body["spec"]["template"])
        for key in _KNATIVE_ONLY:
            template["spec"].pop(key, None)
        user = template["spec"]["containers"][0]
        port = int((user.get("ports") or [{}])[0].get("containerPort", 8080))
        knative_env = {"PORT": str(port), "K_SERVICE": name, "K_CONFIGURATION": name, "K_REVISION": f"{name}-00001"}
        _add_env(user, knative_env)
        template["spec"]["containers"].append(
            {
                "name": "route",
                "image": self.router_image,
                "command": ["socat", "TCP-LISTEN:80,fork,reuseaddr", f"TCP:127.0.0.1:{port}"],
            }
        )
        workload = self._workload(namespace, f"{name}-00001-{suffix}", template)
        workload.aliases.append(f"{name}.{namespace}.svc.{self.cluster_domain}")
        return workload

    # -- the Pod ----------------------------------------------------------------------------------

    def _workload(self, namespace: str, name: str, template: dict[str, Any]) -> Workload:
        meta = template.get("metadata") or {}
        spec = copy.deepcopy(template["spec"])
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": dict(meta.get("labels") or {})},
            "spec": spec,
        }
        spec["restartPolicy"] = "Never"  # a test reads a crash in the logs; nothing restarts it
        containers = [*spec.get("initContainers", []), *spec["containers"]]
        for container in containers:
            for probe in _PROBES:
                container.pop(probe, None)
            container.pop("ports", None)
            image = container["image"]
            container["image"] = self.images.get(image, image)
            assert container["image"].startswith("localhost/"), f"{name}: no local image for {image}"
            if self.api_server is not None:
                host, port = self.api_server
                _add_env(container, {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": str(port)})
            for var in container.get("env") or []:
                assert "secretKeyRef" not in (var.get("valueFrom") or {}), f"{name}: env from a Secret"
        security = spec.setdefault("securityContext", {})
        if "fsGroup" in security:
            security["supplementalGroups"] = sorted({*security.get("supplementalGroups", []), security["fsGroup"]})
        folder = self.workdir / name
        documents = self._volumes(namespace, spec, folder, security.get("fsGroup"))
        self._service_account(namespace, spec, folder / "serviceaccount", containers)
        labels = pod["metadata"]["labels"]
        aliases = [
            f"{svc['metadata']['name']}.{namespace}.svc.{self.cluster_domain}"
            for svc in self._services(namespace)
            if (selector := svc["spec"].get("selector")) and all(labels.get(k) == v for k, v in selector.items())
        ]
        return Workload(pod, documents, aliases)

    def _services(self, namespace: str) -> Iterable[dict[str, Any]]:
        for body in self.items:
            kind, where = (body["apiVersion"], body["kind"]), body["metadata"].get("namespace")
            if kind == ("v1", "Service") and where == namespace:
                yield body

    def _volumes(
        self, namespace: str, spec: dict[str, Any], folder: Path, fs_group: int | None
    ) -> list[dict[str, Any]]:
        documents: dict[str, dict[str, Any]] = {}
        as_files: set[str] = set()
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                source = volume["configMap"]
                found = self.find("v1", "ConfigMap", namespace, source["name"])
                source["name"] = f"{folder.name}-{source['name']}"  # podman names the volume after it
                if found is not None:
                    documents[source["name"]] = {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": source["name"]},
                        "data": dict(found.get("data") or {}),
                    }
            elif "secret" in volume or "projected" in volume:
                files = self._secret_files(namespace, volume)
                mode = (volume.get("secret") or volume.get("projected") or {}).get("defaultMode", _SECRET_MODE)
                target = folder / volume["name"]
                _write_files(target, files, mode | (0o440 if fs_group is not None else 0), fs_group)
                volume.pop("secret", None)
                volume.pop("projected", None)
                volume["hostPath"] = {"path": str(target), "type": "Directory"}
                as_files.add(volume["name"])
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            for ref in container.get("envFrom") or []:
                assert "secretRef" not in ref, "envFrom a Secret is not stood in for"
            for mount in container.get("volumeMounts", []):
                if mount["name"] in as_files:
                    mount["readOnly"] = True  # kubelet mounts Secret volumes read-only
        return list(documents.values())

    def _secret_files(self, namespace: str, volume: dict[str, Any]) -> dict[str, bytes]:
        """``{path in the volume: content}`` of a secret or projected volume."""
        if "secret" in volume:
            sources = [{"secret": {"name": volume["secret"]["secretName"], **volume["secret"]}}]
        else:
            sources = volume["projected"].get("sources") or []  # the API server drops an empty list
        files: dict[str, bytes] = {}
        for source in sources:
            kind, ref = next(iter(source.items()))
            assert kind in ("secret", "configMap"), f"projected {kind} is not stood in for"
            body = self.find("v1", "Secret" if kind == "secret" else "ConfigMap", namespace, ref["name"])
            if body is None:
                assert ref.get("optional"), f"{kind} {namespace}/{ref['name']} is missing and not optional"
                continue
            data = _data(body)
            items = ref.get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                files[item["path"]] = data[item["key"]]
        return files

    def _service_account(
        self, namespace: str, spec: dict[str, Any], folder: Path, containers: list[dict[str, Any]]
    ) -> None:
        account = spec.get("serviceAccountName", "default")
        token = self.tokens.get((namespace, account))
        if spec.get("automountServiceAccountToken") is False or token is None or self.api_ca is None:
            return
        files = {"token": token.encode(), "ca.crt": self.api_ca.read_bytes(), "namespace": namespace.encode()}
        _write_files(folder, files, 0o644, None)
        spec.setdefault("volumes", []).append(
            {"name": "kube-api-access", "hostPath": {"path": str(folder), "type": "Directory"}}
        )
        for container in containers:
            mounts = container.setdefault("volumeMounts", [])
            mounts.append({"name": "kube-api-access", "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True})


def _add_env(container: dict[str, Any], env: Mapping[str, str]) -> None:
    container["env"] = [*(container.get("env") or []), *({"name": k, "value": v} for k, v in env.items())]


def _data(body: dict[str, Any]) -> dict[str, bytes]:
    if body["kind"] == "ConfigMap":
        return {k: v.encode() for k, v in (body.get("data") or {}).items()}
    out = {k: base64.b64decode(v) for k, v in (body.get("data") or {}).items()}
    out.update({k: v.encode() for k, v in (body.get("stringData") or {}).items()})
    return out


def _write_files(folder: Path, files: Mapping[str, bytes], mode: int, group: int | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    gid = group if group is not None else 0
    for relative, content in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        os.chown(path, 0, gid)
        path.chmod(mode)
    for path in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        os.chown(path, 0, gid)
        path.chmod(0o755)
