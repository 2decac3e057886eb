"""A real Gitea (built by the toolchain): start, admin + token, repo, push over HTTP, pull request."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from rebuild.adapters import process
from rebuild.adapters.gitea import Gitea
from rebuild.adapters.gitserver import git_env
from rebuild.core.errors import ForgeError

pytestmark = pytest.mark.integration


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, check: bool = True) -> Any:
    return subprocess.run(["git", *args], cwd=cwd, env=env or git_env(), capture_output=True, text=True, check=check)


def test_gitea_repo_push_and_pull_request(tmp_path: Path, toolchain: Any) -> None:
    forge = Gitea(tmp_path / "gitea", toolchain=toolchain)
    try:
        st = forge.start()
        assert st.state == "running" and st.url == forge.url and st.pid
        rec = forge._proc()
        assert rec is not None and process.alive(rec)

        # secrets: 0600 files, never in any argv
        token = forge.token
        for name in ("admin-token", "admin-password"):
            path = forge.root / "secrets" / name
            assert path.stat().st_mode & 0o777 == 0o600
        assert forge.config.stat().st_mode & 0o777 == 0o600
        password = (forge.root / "secrets" / "admin-password").read_text().strip()
        cmdline = Path(f"/proc/{st.pid}/cmdline").read_bytes().decode()
        assert token not in cmdline and password not in cmdline

        me = forge.api("GET", "/user")
        assert me["login"] == forge.admin_user and me["is_admin"] is True

        repo = forge.create_repo("platform")
        assert repo["default_branch"] == "main" and repo["clone_url"] == forge.clone_url("rebuild", "platform")
        url = forge.clone_url(forge.admin_user, "platform")
        assert "@" not in url and token not in url

        # without credentials the forge refuses a push
        work = tmp_path / "work"
        git("clone", url, str(work), env=forge.git_env())
        git("switch", "-c", "rebuild/capture-1", cwd=work)
        (work / "apps").mkdir()
        cart = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cart\ndata:\n  replicas: '5'\n"
        (work / "apps" / "cart.yaml").write_text(cart)
        git("add", ".", cwd=work)
        git("-c", "user.name=rebuild", "-c", "user.email=rebuild@localhost", "commit", "-qm", "capture: cart", cwd=work)
        refused = git("push", "origin", "rebuild/capture-1", cwd=work, check=False)
        assert refused.returncode != 0 and "terminal prompts disabled" in refused.stderr, refused.stderr

        pushed = git("push", "origin", "rebuild/capture-1", cwd=work, env=forge.git_env())
        assert pushed.returncode == 0, pushed.stderr
        assert token not in pushed.stderr + pushed.stdout

        pr = forge.open_pull_request(
            forge.admin_user, "platform", head="rebuild/capture-1", base="main", title="Backport manual changes", body="cart: 5"
        )
        assert pr["number"] >= 1 and pr["state"] == "open"
        assert pr["head"]["ref"] == "rebuild/capture-1" and pr["base"]["ref"] == "main"
        prs = forge.list_pull_requests(forge.admin_user, "platform")
        assert [p["number"] for p in prs] == [pr["number"]]
        assert prs[0]["title"] == "Backport manual changes"

        with pytest.raises(ForgeError, match="HTTP 404"):
            forge.list_pull_requests(forge.admin_user, "no-such-repo")
    finally:
        rec = forge._proc()
        forge.stop()
    assert forge.status().state == "stopped"
    assert rec is not None and not process.alive(rec), "gitea is still running"


def test_gitea_restarts_on_its_data(tmp_path: Path, toolchain: Any) -> None:
    forge = Gitea(tmp_path / "gitea", toolchain=toolchain)
    try:
        forge.start()
        token = forge.token
        forge.create_repo("kept", auto_init=False)
        forge.stop()
        assert forge.status().state == "stopped"
        port = forge.port
        forge.start()
        assert forge.token == token and forge.port == port
        assert forge.api("GET", f"/repos/{forge.admin_user}/kept")["name"] == "kept"
    finally:
        rec = forge._proc()
        forge.stop()
    assert rec is not None and not process.alive(rec), "gitea is still running"
