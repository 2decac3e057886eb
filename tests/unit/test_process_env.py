"""Daemons rebuild starts never inherit credentials from the environment."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rebuild.adapters import process


def test_inherited_env_drops_credentials_keeps_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    names = ("GITEA_TOKEN", "GIT_PASSWORD", "FORGE_TOKEN", "PULUMI_CONFIG_PASSPHRASE", "AWS_SECRET_ACCESS_KEY", "MY_API_KEY")
    for name in names:
        monkeypatch.setenv(name, "s3cr3t")
    monkeypatch.setenv("PATH", "/usr/bin")
    monkeypatch.setenv("KUBECONFIG", "/k")
    env = process.inherited_env({"EXTRA": "1"})
    assert "s3cr3t" not in env.values()
    assert env["PATH"] == "/usr/bin" and env["KUBECONFIG"] == "/k" and env["EXTRA"] == "1"


def test_spawned_daemon_environment_has_no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FORGE_TOKEN", "tok-123")
    log = tmp_path / "env.log"
    rec = process.spawn("env", ["/usr/bin/env"], log=log)
    deadline = time.monotonic() + 5
    while process.alive(rec) and time.monotonic() < deadline:
        time.sleep(0.02)
    text = log.read_text()
    assert "PATH=" in text and "tok-123" not in text
