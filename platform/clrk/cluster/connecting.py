"""Talking to a cluster: the kubeconfig context, the dynamic client, API errors as ClusterErrors.

:func:`connect` is the only place that reads a kubeconfig; :class:`Cluster` finds resources by
``apiVersion``/``kind`` and says, when one is missing, which piece of the platform is not installed
and how to get it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import config as kube_config
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from clrk.cluster.failures import api_failure, missing_kind
from clrk.errors import ClusterError

__all__ = ["Cluster", "connect", "unreachable"]


def unreachable(host: str, context: str, reason: object) -> ClusterError:
    return ClusterError(
        f"cannot reach the cluster at {host} (context {context!r}): {reason}; "
        "check `kubectl cluster-info`, or pick another with --kubeconfig/--context"
    )


@dataclass
class Cluster:
    """One API server, as a kubeconfig context describes it."""

    api: ApiClient
    context: str
    _dynamic: DynamicClient | None = None

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    @property
    def dynamic(self) -> DynamicClient:
        if self._dynamic is None:
            with self.calling():
                self._dynamic = DynamicClient(self.api)  # type: ignore[no-untyped-call]
        return self._dynamic

    @contextmanager
    def calling(self, what: str = "", source: str = "", missing_ok: bool = False) -> Iterator[None]:
        """Turn transport failures and API refusals inside the block into ClusterErrors; with
        ``missing_ok``, a 404 propagates as it is for the caller to handle."""
        try:
            yield
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise unreachable(self.host, self.context, reason) from None
        except ApiException as exc:
            if missing_ok and exc.status == 404:
                raise
            raise api_failure(exc.status, exc.body, what, source) from None

    def read(self, resource: Any, name: str, namespace: str | None) -> dict[str, Any] | None:
        """The object, or None when there is none."""
        try:
            with self.calling(f"{resource.kind} {name}", missing_ok=True):
                return dict(resource.get(name=name, namespace=namespace).to_dict())
        except ApiException:
            return None

    def resource(self, api_version: str, kind: str) -> Any:
        """The dynamic client's handle on ``kind``, or a ClusterError naming what to install."""
        try:
            with self.calling():
                return self.dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            raise ClusterError(missing_kind(api_version, kind, self.context)) from None


def connect(kubeconfig: str | None = None, context: str | None = None) -> Cluster:
    """A client for ``context`` of ``kubeconfig`` (``$KUBECONFIG``, ``~/.kube/config``), or the
    pod's service account when running inside a cluster with no kubeconfig at hand."""
    configuration = type.__call__(Configuration)
    configuration.retries = 1  # an unreachable cluster should fail in seconds, not minutes
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
    default = os.path.expanduser(kube_config.KUBE_CONFIG_DEFAULT_LOCATION)
    try:
        if path is None and not os.path.exists(default) and "KUBERNETES_SERVICE_HOST" in os.environ:
            kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return Cluster(ApiClient(configuration), "in-cluster")
        kube_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, context=context, client_configuration=configuration
        )
        _, current = kube_config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError) as exc:
        where = path or default
        raise ClusterError(
            f"no usable kubeconfig ({where}): {exc}; point --kubeconfig or $KUBECONFIG at one, "
            "or create a cluster first (hack/kind-up.sh makes a local one)"
        ) from None
    return Cluster(ApiClient(configuration), context or str(current.get("name", "")))
