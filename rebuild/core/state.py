"""Where rebuild keeps its state: one place that knows the state dir and the paths under it.

Cluster data, stack state, git mirrors and checkouts, the git server, run records and the
render cache all live under one folder per user (or per ``REBUILD_STATE_DIR``), so a test, a
drill or a CI job can keep its own and delete it whole. :class:`StateLayout` names every path
under that folder, so a reader finds the whole map here and two modules never disagree on
where a file lives (the layout is a file format too: an existing state dir must keep working).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def state_root() -> Path:
    """Where cluster data, stack state and run records live: $REBUILD_STATE_DIR, else XDG state."""
    env = os.environ.get("REBUILD_STATE_DIR")
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return (base / "rebuild").resolve()


@dataclass(frozen=True)
class StateLayout:
    """Every path under one state dir.

    ``<root>/``
      ``clusters/<name>/``          a cluster's record, PKI, logs, kubeconfigs (clusters/*)
      ``clusters/<name>/flux/``     the local provider's Flux controllers (reconcilers/flux_local)
      ``gitserver/``                the git server publishing local-folder sources
      ``charts/<source>/``          the chart repository served from a source's ``charts`` folder
      ``git/<source>.git``          bare mirrors of the sources; ``checkouts/<source>/<sha>/`` one commit each
      ``pulumi/``                   the Pulumi file backend; ``stacks/<project>/`` the programs' private copies
      ``cache/render/``             rendered sources by commit (desired/cache)
      ``capture/<source>/``         the work tree a capture commits its backport in
      ``drills/``                   a report folder per drill, and ``history.jsonl``; ``backends/<drill>/``
                                    a running drill's own Pulumi backend
      ``runbooks/runs/``            runbook runs; ``runbooks/audit.jsonl`` their audit log
    """

    root: Path

    @classmethod
    def default(cls) -> StateLayout:
        """The layout of the state dir this process uses (:func:`state_root`)."""
        return cls(state_root())

    # ------------------------------------------------------------------ clusters

    @property
    def clusters(self) -> Path:
        return self.root / "clusters"

    def cluster_dir(self, name: str) -> Path:
        return self.clusters / name

    def cluster_kubeconfig(self, name: str) -> Path:
        """The kubeconfig a cluster provider writes (or copies) for the cluster."""
        return self.cluster_dir(name) / "kubeconfig"

    def stack_kubeconfig(self, name: str) -> Path:
        """The kubeconfig `up` takes from the cluster stack's output (what plan/up/verify use)."""
        return self.cluster_dir(name) / "rebuild-kubeconfig"

    def flux_dir(self, name: str) -> Path:
        """The Flux controllers run as host processes for a local cluster: record, artifacts, logs."""
        return self.cluster_dir(name) / "flux"

    # ------------------------------------------------------------------ git

    @property
    def gitserver(self) -> Path:
        return self.root / "gitserver"

    @property
    def mirrors(self) -> Path:
        """The folder :class:`rebuild.adapters.git.Mirrors` keeps ``git/`` and ``checkouts/`` under."""
        return self.root

    def mirror(self, source: str) -> Path:
        return self.root / "git" / f"{source}.git"

    def checkout(self, source: str, sha: str) -> Path:
        return self.root / "checkouts" / source / sha

    @property
    def chart_repos(self) -> Path:
        return self.root / "charts"

    def chart_repo(self, source: str) -> Path:
        """The chart repository served from a source's ``charts`` folder (adapters/helmrepo state)."""
        return self.chart_repos / source

    def capture_work(self, source: str) -> Path:
        return self.root / "capture" / source

    # ------------------------------------------------------------------ stacks

    @property
    def pulumi_backend(self) -> Path:
        return self.root / "pulumi"

    def stack_program(self, project: str) -> Path:
        """The private copy of a built-in Pulumi program that runs (so the package stays read-only)."""
        return self.root / "stacks" / project

    def stack_run_marker(self, name: str, stack: str) -> Path:
        """The fingerprint of a user stack's last successful `up` (its program and set config), in
        any backend of this state dir: a rerun of the same program skips its preview."""
        return self.root / "stacks" / ".runs" / f"{name}-{stack}"

    # ------------------------------------------------------------------ caches and records

    @property
    def render_cache(self) -> Path:
        return self.root / "cache" / "render"

    @property
    def drills(self) -> Path:
        return self.root / "drills"

    def drill_backend(self, cluster: str) -> Path:
        """A drill's throwaway Pulumi file backend (every stack of the drill); removed by its teardown."""
        return self.drills / "backends" / cluster

    def drill_report(self, started_at: str, cluster: str) -> Path:
        """One drill's report folder: ``drills/<started_at without colons>-<cluster>``."""
        return self.drills / f"{started_at.replace(':', '')}-{cluster}"

    @property
    def drill_history(self) -> Path:
        return self.drills / "history.jsonl"

    @property
    def runbook_runs(self) -> Path:
        return self.root / "runbooks" / "runs"

    @property
    def runbook_audit(self) -> Path:
        return self.root / "runbooks" / "audit.jsonl"
