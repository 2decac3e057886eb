"""Cluster providers behind one protocol (see base.py): local, kind, kubeconfig."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rebuild.clusters.base import Cluster, ClusterStatus
from rebuild.core.errors import ConfigError
from rebuild.core.state import StateLayout, state_root

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


@dataclass(frozen=True)
class GitServerRelease:
    """What ``cluster down`` did with the state dir's git server."""

    stopped: bool  # it was running and is stopped now
    used_by: list[str] = field(default_factory=list)  # clusters still running, so it was kept
    # sources whose chart repository (sources[].charts) was running and is stopped now
    charts_stopped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"stopped": self.stopped, "used_by": self.used_by, "charts_stopped": self.charts_stopped}


def release_gitserver(root: Path | None = None) -> GitServerRelease:
    """Stop the state dir's git server unless a cluster of that state dir still uses it.

    The git server publishes local-folder sources; what pulls from it on its own is the
    reconciler of a cluster, which can reach 127.0.0.1 only when it runs as processes on
    this machine (the local provider's Flux controllers). So a cluster "uses" the server
    while any process rebuild recorded for it under ``<state>/clusters/<name>/`` is still
    running. Stopping it is safe for rebuild itself: every command that needs it
    (``up``, ``verify``, ``capture``, ``plan``) starts it again, on the same port. The chart
    repositories served from sources' ``charts`` folders follow the same rule (``plan`` and ``up``
    start them again).
    """
    from rebuild.adapters import gitserver, helmrepo
    from rebuild.clusters.base import live_processes

    layout = StateLayout(root or state_root())
    users = sorted(d.name for d in layout.clusters.glob("*") if d.is_dir() and live_processes(d))
    if users:
        return GitServerRelease(False, users)
    charts = helmrepo.stop_repos(layout.chart_repos)
    return GitServerRelease(gitserver.stop_server(layout.gitserver), charts_stopped=charts)


__all__ = ["PROVIDERS", "Cluster", "ClusterStatus", "GitServerRelease", "get_cluster", "release_gitserver"]
