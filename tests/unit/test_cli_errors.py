"""Bad input never reaches a cluster: exit 2, one line naming the fix, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import cli_env


def run(args: list[str], state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rebuild.cli", *args], capture_output=True, text=True, env=cli_env(state), timeout=60
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
