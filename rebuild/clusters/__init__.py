"""Cluster providers behind one protocol (see base.py): local, kind, kubeconfig."""

from __future__ import annotations

from pathlib import Path

from rebuild.clusters.base import Cluster, ClusterStatus, state_root
from rebuild.errors import ConfigError

PROVIDERS = ("local", "kind", "kubeconfig")


def get_cluster(
    provider: str,
    name: str,
    *,
    nodes: int = 1,
    api_port: int | None = None,
    context: str | None = None,
    root: Path | None = None,
    unsafe_fast_storage: bool = False,
) -> Cluster:
    root = root or state_root()
    if provider == "local":
        from rebuild.clusters.local import LocalCluster

        return LocalCluster(name, nodes=nodes, api_port=api_port, root=root, unsafe_fast_storage=unsafe_fast_storage)
    if provider == "kind":
        from rebuild.clusters.kind import KindCluster

        return KindCluster(name, nodes=nodes, api_port=api_port, root=root)
    if provider == "kubeconfig":
        from rebuild.clusters.kubeconfig import KubeconfigCluster

        return KubeconfigCluster(name, context=context, root=root)
    raise ConfigError(f"unknown cluster provider {provider!r}", fix=f"use one of: {', '.join(PROVIDERS)}")


__all__ = ["PROVIDERS", "Cluster", "ClusterStatus", "get_cluster", "state_root"]
