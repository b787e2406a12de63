"""Manifests: load (files, folders, stdin), validate, and compile to Kubernetes objects."""

from clrk.manifests.bundles import Bundle, compile_bundle, entrypoint, load_bundle
from clrk.manifests.options import ClusterOptions
from clrk.manifests.parsing import Manifests
from clrk.manifests.policies import egress_config

__all__ = [
    "Bundle",
    "ClusterOptions",
    "Manifests",
    "compile_bundle",
    "egress_config",
    "entrypoint",
    "load_bundle",
]
