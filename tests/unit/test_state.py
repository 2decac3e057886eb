"""StateLayout: the one map of the state dir, and the modules that follow it."""

from __future__ import annotations

from pathlib import Path

import pytest

from rebuild.adapters.git import Mirrors
from rebuild.clusters.kind import KindCluster
from rebuild.clusters.kubeconfig import KubeconfigCluster
from rebuild.clusters.local import LocalCluster
from rebuild.core.state import StateLayout, state_root
from rebuild.drills.runbook.state import audit_path, runs_dir


def test_default_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REBUILD_STATE_DIR", str(tmp_path / "s"))
    assert StateLayout.default().root == state_root() == (tmp_path / "s").resolve()


def test_paths_keep_the_existing_state_dir_format(tmp_path: Path) -> None:
    # These names are a file format: a state dir written by an earlier rebuild must keep working.
    lay = StateLayout(tmp_path)
    assert lay.cluster_dir("c1") == tmp_path / "clusters" / "c1"
    assert lay.cluster_kubeconfig("c1") == tmp_path / "clusters" / "c1" / "kubeconfig"
    assert lay.stack_kubeconfig("c1") == tmp_path / "clusters" / "c1" / "rebuild-kubeconfig"
    assert lay.flux_dir("c1") == tmp_path / "clusters" / "c1" / "flux"
    assert lay.gitserver == tmp_path / "gitserver"
    assert lay.mirror("src") == tmp_path / "git" / "src.git"
    assert lay.checkout("src", "abc") == tmp_path / "checkouts" / "src" / "abc"
    assert lay.capture_work("src") == tmp_path / "capture" / "src"
    assert lay.pulumi_backend == tmp_path / "pulumi"
    assert lay.stack_program("cluster") == tmp_path / "stacks" / "cluster"
    assert lay.render_cache == tmp_path / "cache" / "render"
    assert lay.drill_history == tmp_path / "drills" / "history.jsonl"
    assert lay.drill_report("2026-01-02T03:04:05Z", "drill-x") == tmp_path / "drills" / "2026-01-02T030405Z-drill-x"
    assert lay.runbook_runs == tmp_path / "runbooks" / "runs"
    assert lay.runbook_audit == tmp_path / "runbooks" / "audit.jsonl"


def test_modules_use_the_layout(tmp_path: Path) -> None:
    lay = StateLayout(tmp_path)
    assert LocalCluster("c1", root=tmp_path).dir == lay.cluster_dir("c1")
    assert LocalCluster("c1", root=tmp_path).kubeconfig() == lay.cluster_kubeconfig("c1")
    assert KindCluster("c1", root=tmp_path).kubeconfig() == lay.cluster_kubeconfig("c1")
    assert KubeconfigCluster("c1", root=tmp_path).root == lay.root
    assert Mirrors(lay.mirrors)._mirror_path("src") == lay.mirror("src")
    assert runs_dir(tmp_path) == lay.runbook_runs
    assert audit_path(tmp_path) == lay.runbook_audit
