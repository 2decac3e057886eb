"""Gitea's generated configuration and secret handling, without starting it."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from rebuild.adapters.gitea import Gitea, app_ini
from rebuild.core.errors import ForgeError
from rebuild.toolchain.tools import Toolchain


def test_app_ini_is_headless_offline_and_loopback_only(tmp_path: Path) -> None:
    text = app_ini(work=tmp_path, static=tmp_path / "static", port=3999, run_user="root", secret_key="k", internal_token="t")
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read_string("[root]\n" + text)
    assert cfg["root"]["I_AM_BEING_UNSAFE_RUNNING_AS_ROOT"] == "true"
    assert cfg["server"]["HTTP_ADDR"] == "127.0.0.1" and cfg["server"]["HTTP_PORT"] == "3999"
    assert cfg["server"]["ROOT_URL"] == "http://127.0.0.1:3999/"
    assert cfg["server"]["OFFLINE_MODE"] == "true" and cfg["server"]["DISABLE_SSH"] == "true"
    assert cfg["server"]["STATIC_ROOT_PATH"] == str(tmp_path / "static")
    assert cfg["database"]["DB_TYPE"] == "sqlite3"
    assert cfg["security"]["INSTALL_LOCK"] == "true"


def test_configure_writes_0600_and_keeps_its_secrets_across_restarts(tmp_path: Path) -> None:
    g = Gitea(tmp_path / "g", toolchain=Toolchain(root=tmp_path / "cache"))
    g.root.mkdir()
    g._configure(4000, tmp_path / "static")
    assert g.config.stat().st_mode & 0o777 == 0o600
    first = g.config.read_text()
    g._configure(4001, tmp_path / "static")
    second = g.config.read_text()
    assert "HTTP_PORT = 4001" in second

    def keys(t: str) -> list[str]:
        return [ln for ln in t.splitlines() if ln.startswith(("SECRET_KEY", "INTERNAL_TOKEN"))]

    assert keys(first) == keys(second) and len(keys(first)) == 2


def test_not_started_is_a_forge_error(tmp_path: Path) -> None:
    g = Gitea(tmp_path / "g", toolchain=Toolchain(root=tmp_path / "cache"))
    assert g.status().state == "absent"
    with pytest.raises(ForgeError, match="never started"):
        _ = g.url
    with pytest.raises(ForgeError, match="no admin token"):
        _ = g.token
