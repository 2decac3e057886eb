"""The smart-HTTP git server with the real git client: clone, fetch, push, basic auth, detached mode."""

from __future__ import annotations

import base64
import secrets
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from rebuild.adapters import gitserver, process
from rebuild.adapters.gitserver import Credentials, GitServer, auth_env, git_env, publish_dir

pytestmark = pytest.mark.integration


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, env=env or git_env(), capture_output=True, text=True, check=False)


def commit_file(work: Path, name: str, text: str, message: str) -> None:
    (work / name).write_text(text)
    assert git("add", name, cwd=work).returncode == 0
    done = git("-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm", message, cwd=work)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[Path, str]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n")
    root = tmp_path / "repos"
    sha = publish_dir(src, root / "demo.git", "seed")
    return root, sha


def test_clone_fetch_and_push_without_auth(seeded: tuple[Path, str], tmp_path: Path) -> None:
    root, sha = seeded
    with GitServer(root) as srv:
        url = srv.repo_url("demo.git")
        assert url.startswith("http://127.0.0.1:")
        a, b = tmp_path / "a", tmp_path / "b"
        assert git("clone", url, str(a)).returncode == 0
        assert git("rev-parse", "HEAD", cwd=a).stdout.strip() == sha
        assert git("clone", url, str(b)).returncode == 0
        commit_file(a, "new.yaml", "x: 1\n", "add new")
        pushed = git("push", "origin", "main", cwd=a)
        assert pushed.returncode == 0, pushed.stderr
        # a second clone sees it through fetch, over protocol v2 as well as v0
        for proto in ("2", "0"):
            fetched = git("-c", f"protocol.version={proto}", "pull", "-q", "--ff-only", cwd=b)
            assert fetched.returncode == 0, fetched.stderr
        assert (b / "new.yaml").read_text() == "x: 1\n"
        # a large push is sent chunked by git (over http.postBuffer) and must still work
        commit_file(a, "big.bin", secrets.token_hex(1_500_000), "big")
        assert git("push", "origin", "main", cwd=a).returncode == 0
        head = git("ls-remote", url, "refs/heads/main").stdout.split()[0]
        assert head == git("rev-parse", "HEAD", cwd=a).stdout.strip()
        # publishing on top of pushed history makes a commit whose parent is the pushed head
        src2 = tmp_path / "src2"
        src2.mkdir()
        (src2 / "only.yaml").write_text("only: true\n")
        republished = publish_dir(src2, root / "demo.git", "republish")
        assert git("ls-remote", url, "refs/heads/main").stdout.split()[0] == republished
        assert git("pull", "-q", "--ff-only", cwd=a).returncode == 0
        assert git("rev-parse", "HEAD^", cwd=a).stdout.strip() == head
        assert sorted(p.name for p in a.iterdir() if p.name != ".git") == ["only.yaml"]


def test_basic_auth_required_and_checked(seeded: tuple[Path, str], tmp_path: Path) -> None:
    root, sha = seeded
    creds = Credentials("robot", secrets.token_urlsafe(18))
    with GitServer(root, credentials=creds) as srv:
        url = srv.repo_url("demo.git")
        anon = git("clone", url, str(tmp_path / "anon"))
        assert anon.returncode != 0 and "terminal prompts disabled" in anon.stderr
        wrong = git("clone", url, str(tmp_path / "wrong"), env=auth_env(Credentials("robot", "not-it")))
        # git sends the header, gets 401 and (prompts being off) gives up
        assert wrong.returncode != 0 and not (tmp_path / "wrong" / ".git").exists()
        other_user = git("clone", url, str(tmp_path / "other"), env=auth_env(Credentials("someone", creds.password)))
        assert other_user.returncode != 0

        work = tmp_path / "ok"
        ok = git("clone", url, str(work), env=auth_env(creds))
        assert ok.returncode == 0, ok.stderr
        assert git("rev-parse", "HEAD", cwd=work).stdout.strip() == sha
        commit_file(work, "b.yaml", "b: 2\n", "b")
        pushed = git("push", "origin", "main", cwd=work, env=auth_env(creds))
        assert pushed.returncode == 0, pushed.stderr
        assert creds.password not in pushed.stderr

        # the raw HTTP answers: 401 with a challenge for none or a wrong password, 200 for the right one
        refs = url + "/info/refs?service=git-upload-pack"
        for bad in (None, Credentials("robot", "not-it"), Credentials("robot", creds.password + "x")):
            headers = {"Authorization": bad.header()} if bad else {}
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(urllib.request.Request(refs, headers=headers), timeout=5)
            assert err.value.code == 401 and "Basic" in err.value.headers["WWW-Authenticate"]
        with urllib.request.urlopen(urllib.request.Request(refs, headers={"Authorization": creds.header()}), timeout=5) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "application/x-git-upload-pack-advertisement"
        with urllib.request.urlopen(srv.url + gitserver.HEALTH_PATH, timeout=5) as resp:
            assert resp.status == 200
        # path traversal out of the root is refused before git sees it
        token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
        evil = urllib.request.Request(srv.url + "/../../etc/info/refs", headers={"Authorization": f"Basic {token}"})
        with pytest.raises(urllib.error.HTTPError) as err2:
            urllib.request.urlopen(evil, timeout=5)
        assert err2.value.code in (400, 404)


def test_detached_server_outlives_its_caller_and_keeps_secrets_out_of_argv(seeded: tuple[Path, str], tmp_path: Path) -> None:
    root, sha = seeded
    creds = Credentials("robot", secrets.token_urlsafe(18))
    srv = gitserver.spawn(root, log_path=tmp_path / "gitserver.log", credentials=creds)
    try:
        assert srv.alive()
        cmdline = Path(f"/proc/{srv.record.pid}/cmdline").read_bytes().decode()
        assert creds.password not in cmdline and "--root" in cmdline
        work = tmp_path / "w"
        cloned = git("clone", srv.repo_url("demo.git"), str(work), env=auth_env(creds))
        assert cloned.returncode == 0, cloned.stderr
        assert git("rev-parse", "HEAD", cwd=work).stdout.strip() == sha
        assert git("ls-remote", srv.repo_url("demo.git")).returncode != 0
    finally:
        srv.stop()
    assert not process.alive(srv.record)
    assert creds.password not in (tmp_path / "gitserver.log").read_text()


def test_ensure_server_reuses_a_running_server_and_restarts_on_its_port(tmp_path: Path) -> None:
    state = tmp_path / "gitserver"
    srv = gitserver.ensure_server(state)
    try:
        assert srv.healthy() and srv.root == (state / "repos").resolve()
        assert srv.repo_path("demo") == srv.root / "demo.git" and srv.repo_url("demo").endswith(f":{srv.port}/demo.git")
        src = tmp_path / "src"
        src.mkdir()
        (src / "a.yaml").write_text("a: 1\n")
        sha = publish_dir(src, srv.repo_path("demo"), "seed")
        again = gitserver.ensure_server(state)
        assert again.record == srv.record  # the same process, not a second server
        assert git("ls-remote", again.repo_url("demo"), "refs/heads/main").stdout.split()[0] == sha
        assert (state / "gitserver.json").stat().st_mode & 0o777 == 0o600

        assert gitserver.stop_server(state) is True
        assert not srv.alive()
        assert gitserver.stop_server(state) is False
        restarted = gitserver.ensure_server(state)
        assert restarted.record.pid != srv.record.pid and restarted.port == srv.port
        assert git("ls-remote", restarted.repo_url("demo"), "refs/heads/main").stdout.split()[0] == sha
    finally:
        gitserver.stop_server(state)
        srv.stop()
    assert not gitserver.ServerProcess(restarted.record, restarted.port, restarted.root).alive()
