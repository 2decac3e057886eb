"""Hostile input (issue 6, first part): every case is refused with exit 2, names the file and
line, applies nothing, and shows no traceback. Runs the real CLI against real git (rebuild's
own git server publishes each case as a repository)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rebuild.adapters import gitserver
from tests.conftest import REPO

pytestmark = pytest.mark.integration

GOOD_CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n  namespace: default\ndata:\n  k: v\n"
CONFIG = "sources:\n  - {name: demo, url: ., branch: main, path: apps}\ncluster: {provider: local, name: hostile}\n"


BAD = REPO / "tests" / "data" / "bad"
CORPUS: list[dict[str, str]] = yaml.safe_load((BAD / "cases.yaml").read_text())["cases"]


def _write(root: Path, rel: str, data: str | bytes) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        p.write_bytes(data)
    else:
        p.write_text(data)


def lay_over(case: dict[str, str], repo: Path) -> None:
    """Copy a case's files (symlinks as symlinks) over the good repository."""
    if case.get("generate"):  # too big to keep in git: made here, as cases.yaml describes
        _write(repo, "apps/huge.yaml", GOOD_CM + "  big: " + "x" * (50 * 1024 * 1024) + "\n")
        return
    shutil.copytree(BAD / case["dir"], repo, symlinks=True, dirs_exist_ok=True)


def run_plan(config: Path, state: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, REBUILD_STATE_DIR=str(state))
    return subprocess.run([sys.executable, "-m", "rebuild.cli", "--config", str(config), "plan"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=config.parent)


@pytest.mark.parametrize("case", [c for c in CORPUS if c["kind"] == "repo"], ids=lambda c: c["name"])
def test_hostile_repo_content_is_refused(case: dict[str, str], tmp_path: Path, toolchain: object) -> None:
    repo = tmp_path / "repo"
    _write(repo, "apps/ok.yaml", GOOD_CM)
    _write(repo, "rebuild.yaml", CONFIG)
    lay_over(case, repo)
    state = tmp_path / "state"
    try:
        r = run_plan(repo / "rebuild.yaml", state)
    finally:
        gitserver.stop_server(state / "gitserver")
    assert r.returncode == 2, r.stdout + r.stderr
    assert case["expected"] in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "fix:" in r.stderr
    assert not (state / "clusters").exists()  # nothing was created, nothing applied
    assert not list(tmp_path.rglob("PWNED"))  # no shell ever saw a file name


@pytest.mark.parametrize("case", [c for c in CORPUS if c["kind"] == "config"], ids=lambda c: c["name"])
def test_hostile_config_is_refused(case: dict[str, str], tmp_path: Path, toolchain: object) -> None:
    repo = tmp_path / "repo"
    _write(repo, "apps/ok.yaml", GOOD_CM)
    shutil.copyfile(BAD / case["file"], repo / "rebuild.yaml")
    expected = case["expected"]
    state = tmp_path / "state"
    try:
        r = run_plan(repo / "rebuild.yaml", state)
    finally:
        gitserver.stop_server(state / "gitserver")
    assert r.returncode == 2, r.stdout + r.stderr
    assert expected in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert ":p@" not in r.stderr and "bot:tok" not in r.stderr  # credentials are never echoed
    assert not (state / "clusters").exists()
    assert not list(tmp_path.rglob("PWNED"))
