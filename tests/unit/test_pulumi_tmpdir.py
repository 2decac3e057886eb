"""Pulumi's private TMPDIR (rebuild/adapters/pulumi/tmpdir.py): owner-only, one per process, stale ones removed."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from rebuild.adapters.process import OUTER_TMPDIR, inherited_env
from rebuild.adapters.pulumi.stack import Pulumi
from rebuild.adapters.pulumi.tmpdir import private_tmp, pulumi_tmp_env, remove_stale


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_one_owner_only_folder_per_process(tmp_path: Path) -> None:
    first = private_tmp(tmp_path)
    assert first == tmp_path / "tmp" / f"pulumi-{os.getpid()}"
    assert private_tmp(tmp_path) == first
    for folder in (first, first.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_folders_of_processes_that_no_longer_run_are_removed(tmp_path: Path) -> None:
    base = tmp_path / "tmp"
    gone = base / f"pulumi-{dead_pid()}"
    (gone / "sub").mkdir(parents=True)
    (gone / "kubeconfig123").write_text("client-key-data: x\n")
    running = base / f"pulumi-{os.getppid()}"
    running.mkdir()
    other = base / "not-ours"
    other.mkdir()
    assert remove_stale(base) == [gone]
    assert not gone.exists() and running.is_dir() and other.is_dir()
    # and the next private_tmp does the same on its way
    again = base / f"pulumi-{dead_pid()}"
    again.mkdir()
    private_tmp(tmp_path)
    assert not again.exists()


def test_pulumi_runs_with_it(tmp_path: Path) -> None:
    env = Pulumi(root=tmp_path).env()
    assert env["TMPDIR"] == str(tmp_path / "tmp" / f"pulumi-{os.getpid()}")
    assert Path(env["TMPDIR"]).is_dir()


def test_daemons_started_inside_pulumi_get_the_users_tmpdir_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The local cluster and Flux outlive rebuild and its private folder (source-controller clones into TMPDIR)."""
    monkeypatch.setenv("TMPDIR", "/var/tmp/mine")
    monkeypatch.delenv(OUTER_TMPDIR, raising=False)
    env = Pulumi(root=tmp_path).env()
    assert env["TMPDIR"].startswith(str(tmp_path)) and env[OUTER_TMPDIR] == "/var/tmp/mine"
    # what a Pulumi plugin sees, and what a daemon it spawns gets
    monkeypatch.setenv("TMPDIR", env["TMPDIR"])
    monkeypatch.setenv(OUTER_TMPDIR, env[OUTER_TMPDIR])
    daemon = inherited_env()
    assert daemon["TMPDIR"] == "/var/tmp/mine" and OUTER_TMPDIR not in daemon
    # rebuild run inside such a plugin keeps pointing Pulumi at the user's TMPDIR as the outer one
    assert pulumi_tmp_env(tmp_path)[OUTER_TMPDIR] == "/var/tmp/mine"
    # no TMPDIR of the user's: the daemon gets none (the system default)
    monkeypatch.setenv(OUTER_TMPDIR, "")
    assert "TMPDIR" not in inherited_env()
