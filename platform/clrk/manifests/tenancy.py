"""What keeps one agent namespace's pods to themselves in a cluster. Pure functions, no I/O.

Three objects, beside the egress fence (``platform/config/agent-namespace.yaml``):

- the label :data:`VISIBILITY_LABEL` = ``cluster-local`` on every compiled Knative Service
  (:func:`~clrk.manifests.compiling.knative_service` sets it): Knative's route reconciler reads
  ``networking.knative.dev/visibility`` (knative.dev/networking's ``VisibilityLabelKey``) from the
  Service's labels, which it copies to the Route, and then publishes the route on the networking
  layer's cluster-local gateway only (``<name>.<namespace>.svc.<domain>``, where the clrk ingress
  calls it), never on the external one, whatever ``config-domain`` says;
- the NetworkPolicy :data:`INGRESS_POLICY` (:func:`agent_ingress_policy`): agent pods accept
  connections only from what carries the ingress's requests to them (the clrk ingress pods,
  Knative's activator, the networking layer's gateway pods), on queue-proxy's serving port, and
  from Knative's autoscaler on queue-proxy's metrics port; another agent's pod cannot connect;
- the Secret :data:`~clrk.manifests.options.ClusterOptions.agent_keys_secret`
  (:func:`agent_keys_secret`): the namespace's own ``proxy-token`` and ``request`` keys, derived
  from the platform key (:func:`clrk_runtime.protocol.keys.namespace_key`), which stays in
  clrk-system. Whoever reads this namespace's Secrets can sign proxy tokens and requests for this
  namespace's agents only. Agent pods mount it mode 0400, root's: the shim reads it, the sandboxes'
  uids cannot.

And one for the namespace's callback receivers: the Secret
:data:`~clrk.manifests.options.ClusterOptions.callback_secret` (:func:`callback_secret`), key
``secret``, the Standard Webhooks secret (``whsec_…``) of the namespace's ``callback`` key, with
which the ingress signs the CloudEvent of each finished async invocation of its agents. It is
apart from the agent keys so that a receiver's pod can mount it without the ``request`` key (with
which it could sign requests to the agents).
"""

from __future__ import annotations

import base64
from typing import Any

from clrk.manifests.options import INGRESS_NAMESPACE, ClusterOptions
from clrk_runtime.protocol.keys import KeyPurpose, namespace_key, webhook_secret

__all__ = [
    "AGENT_KEYS_DIR",
    "AUTOSCALER_METRICS_PORT",
    "CLUSTER_LOCAL",
    "INGRESS_POLICY",
    "KEY_PURPOSES",
    "QUEUE_PROXY_PORT",
    "VISIBILITY_LABEL",
    "agent_ingress_policy",
    "agent_keys_secret",
    "callback_secret",
    "key_files",
]

VISIBILITY_LABEL = "networking.knative.dev/visibility"
CLUSTER_LOCAL = "cluster-local"
INGRESS_POLICY = "clrk-agents-ingress"
QUEUE_PROXY_PORT = 8012
"""Knative's ``BackendHTTPPort``: queue-proxy's port in every revision pod, where the activator
and the gateway send requests (queue-proxy hands them to the shim over the pod's loopback)."""
AUTOSCALER_METRICS_PORT = 9090
"""Knative's ``AutoscalingQueueMetricsPort``: queue-proxy's metrics, scraped by the autoscaler."""
AGENT_KEYS_DIR = "/var/run/clrk/keys"
"""Where agent pods mount their namespace's keys (one file per purpose)."""
KEY_PURPOSES: tuple[KeyPurpose, ...] = ("proxy-token", "request")
_MANAGED = {"app.kubernetes.io/managed-by": "clrk"}


def key_files() -> dict[str, str]:
    """The shim's settings that name the key files: ``CLRK_EGRESS_TOKEN_KEY_FILE`` (it signs
    proxy tokens) and ``CLRK_REQUEST_KEY_FILE`` (it refuses requests the ingress did not sign)."""
    return {
        "CLRK_EGRESS_TOKEN_KEY_FILE": f"{AGENT_KEYS_DIR}/proxy-token",
        "CLRK_REQUEST_KEY_FILE": f"{AGENT_KEYS_DIR}/request",
    }


def agent_keys_secret(namespace: str, platform_key: bytes | None, options: ClusterOptions) -> dict[str, Any]:
    """The namespace's keys Secret. ``platform_key`` None (``clrk render``, which reads no
    cluster) gives the Secret without data: ``clrk apply`` and the operator fill it in."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": options.agent_keys_secret,
            "namespace": namespace,
            "labels": dict(_MANAGED),
            "annotations": {
                "clrk.dev/derived-from": f"clrk-system/{options.platform_key_secret}",
            },
        },
        "type": "Opaque",
    }
    if platform_key is not None:
        body["data"] = {
            purpose: base64.b64encode(namespace_key(platform_key, purpose, namespace)).decode("ascii")
            for purpose in KEY_PURPOSES
        }
    return body


def callback_secret(namespace: str, platform_key: bytes | None, options: ClusterOptions) -> dict[str, Any]:
    """The namespace's callback Secret (without data when ``platform_key`` is None, as for
    :func:`agent_keys_secret`)."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": options.callback_secret,
            "namespace": namespace,
            "labels": dict(_MANAGED),
            "annotations": {"clrk.dev/derived-from": f"clrk-system/{options.platform_key_secret}"},
        },
        "type": "Opaque",
    }
    if platform_key is not None:
        secret = webhook_secret(namespace_key(platform_key, "callback", namespace))
        body["data"] = {"secret": base64.b64encode(secret.encode("ascii")).decode("ascii")}
    return body


def _namespace(name: str) -> dict[str, Any]:
    return {"matchLabels": {"kubernetes.io/metadata.name": name}}


def agent_ingress_policy(namespace: str, options: ClusterOptions) -> dict[str, Any]:
    """Who may connect to agent pods: see the module's docstring. Namespaces are matched by the
    ``kubernetes.io/metadata.name`` label the API server sets on every namespace (1.21+)."""
    serving = [{"port": QUEUE_PROXY_PORT, "protocol": "TCP"}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": INGRESS_POLICY, "namespace": namespace, "labels": dict(_MANAGED)},
        "spec": {
            "podSelector": {"matchExpressions": [{"key": "clrk.dev/agent", "operator": "Exists"}]},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": _namespace(INGRESS_NAMESPACE),
                            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "clrk-ingress"}},
                        },
                        {
                            "namespaceSelector": _namespace(options.knative_namespace),
                            "podSelector": {"matchLabels": {"app": "activator"}},
                        },
                        {"namespaceSelector": _namespace(options.knative_gateway_namespace)},
                    ],
                    "ports": serving,
                },
                {
                    "from": [
                        {
                            "namespaceSelector": _namespace(options.knative_namespace),
                            "podSelector": {"matchLabels": {"app": "autoscaler"}},
                        }
                    ],
                    "ports": [{"port": AUTOSCALER_METRICS_PORT, "protocol": "TCP"}],
                },
            ],
        },
    }
