"""Bad input never reaches a cluster: exit 2, one line naming the fix, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import cli_env


def run(args: list[str], state: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rebuild.cli", *args], capture_output=True, text=True, env=cli_env(state), timeout=60, cwd=cwd
    )


def test_unknown_provider(tmp_path: Path) -> None:
    r = run(["cluster", "up", "--name", "x", "--provider", "minikube"], tmp_path)
    assert r.returncode == 2
    assert "unknown cluster provider 'minikube'" in r.stderr and "fix:" in r.stderr
    assert "Traceback" not in r.stderr


def test_invalid_cluster_name(tmp_path: Path) -> None:
    r = run(["cluster", "up", "--name", "Bad_Name"], tmp_path)
    assert r.returncode == 2 and "not valid" in r.stderr and "Traceback" not in r.stderr


def test_status_of_absent_cluster_is_exit_1(tmp_path: Path) -> None:
    r = run(["-o", "json", "cluster", "status", "--name", "nothing"], tmp_path)
    assert r.returncode == 1
    assert '"state": "absent"' in r.stdout


def test_cluster_commands_take_the_name_from_rebuild_yaml(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    config = repo / "rebuild.yaml"
    config.write_text(
        "sources:\n- {name: app, url: ./, branch: main, path: deploy}\ncluster:\n  name: from-config\n", encoding="utf-8"
    )
    r = run(["-o", "json", "--config", str(config), "cluster", "status"], tmp_path / "state")
    assert r.returncode == 1, r.stderr  # absent: exit 1, and it is the cluster rebuild.yaml names
    assert '"name": "from-config"' in r.stdout and '"state": "absent"' in r.stdout
    r = run(["cluster", "down"], tmp_path / "state", cwd=tmp_path)  # no --name, no rebuild.yaml here
    assert r.returncode == 2 and "Missing option '--name'" in r.stderr and "rebuild.yaml" in r.stderr
    assert "Traceback" not in r.stderr
