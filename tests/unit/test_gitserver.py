"""Pure parts of the git server (auth parsing, paths, env) and publish_dir on a local bare repo."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from rebuild.adapters.gitserver import (
    ENV_PASSWORD,
    ENV_USERNAME,
    Credentials,
    auth_env,
    git_env,
    init_bare,
    parse_basic_auth,
    publish_dir,
    safe_repo_path,
)
from rebuild.core.errors import GitError


def basic(raw: str) -> str:
    return "Basic " + base64.b64encode(raw.encode()).decode()


def test_parse_basic_auth() -> None:
    assert parse_basic_auth(basic("u:p:with:colons")) == ("u", "p:with:colons")
    assert parse_basic_auth("basic " + base64.b64encode(b"u:").decode()) == ("u", "")
    for bad in (None, "", "Bearer abc", "Basic", "Basic !!!", basic("no-colon"), "Basic " + base64.b64encode(b"\xff:x").decode()):
        assert parse_basic_auth(bad) is None


def test_credentials_match_and_never_show_the_password() -> None:
    c = Credentials("robot", "s3cret")
    assert c.matches(c.header())
    assert c.matches(basic("robot:s3cret"))
    assert not c.matches(basic("robot:s3cre"))
    assert not c.matches(basic("Robot:s3cret"))
    assert not c.matches(None)
    assert "s3cret" not in repr(c) and "s3cret" not in str(c)


def test_credentials_from_env() -> None:
    assert Credentials.from_env({}) is None
    assert Credentials.from_env({ENV_USERNAME: "u", ENV_PASSWORD: "p"}) == Credentials("u", "p")
    with pytest.raises(GitError, match="only one of"):
        Credentials.from_env({ENV_USERNAME: "u"})


def test_safe_repo_path() -> None:
    assert safe_repo_path("/demo.git/info/refs?service=git-upload-pack") == "/demo.git/info/refs"
    assert safe_repo_path("//a//b.git/") == "/a/b.git"
    assert safe_repo_path("/demo%2Egit/HEAD") == "/demo.git/HEAD"
    for bad in ("/../etc/passwd", "/a/%2e%2e/b", "/./x", "/a\\b", "/a%00b"):
        assert safe_repo_path(bad) is None


def test_git_env_appends_config_entries() -> None:
    env = git_env({"a.b": "1", "c.d": "2"}, base={"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "x.y", "GIT_CONFIG_VALUE_0": "z"})
    assert env["GIT_CONFIG_COUNT"] == "3"
    assert (env["GIT_CONFIG_KEY_1"], env["GIT_CONFIG_VALUE_1"]) == ("a.b", "1")
    assert (env["GIT_CONFIG_KEY_2"], env["GIT_CONFIG_VALUE_2"]) == ("c.d", "2")
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    a = auth_env(Credentials("u", "p"), base={})
    assert a["GIT_CONFIG_KEY_0"] == "http.extraHeader"
    assert a["GIT_CONFIG_VALUE_0"] == "Authorization: " + basic("u:p")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_publish_dir_commits_snapshots_and_is_idempotent(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "apps").mkdir(parents=True)
    (src / "apps" / "cm.yaml").write_text("a: 1\n")
    (src / ".gitignore").write_text("*.tmp\n")
    (src / "scratch.tmp").write_text("ignored")
    bare = tmp_path / "repos" / "demo.git"

    first = publish_dir(src, bare, "first")
    assert _git(bare, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert _git(bare, "rev-parse", "refs/heads/main") == first
    assert _git(bare, "ls-tree", "-r", "--name-only", first).splitlines() == [".gitignore", "apps/cm.yaml"]
    assert _git(bare, "log", "-1", "--format=%an <%ae>|%s", first) == "rebuild <rebuild@localhost>|first"

    assert publish_dir(src, bare, "unchanged") == first  # no empty commit

    (src / "apps" / "cm.yaml").write_text("a: 2\n")
    (src / "apps" / "new.yaml").write_text("b: 1\n")
    second = publish_dir(src, bare, "second")
    assert second != first
    assert _git(bare, "rev-parse", f"{second}^") == first
    assert _git(bare, "show", f"{second}:apps/cm.yaml") == "a: 2"

    (src / "apps" / "new.yaml").unlink()
    third = publish_dir(src, bare, "third")
    assert _git(bare, "ls-tree", "-r", "--name-only", third).splitlines() == [".gitignore", "apps/cm.yaml"]


def test_publish_dir_sees_every_same_size_edit_made_right_after_a_snapshot(tmp_path: Path) -> None:
    """The kept index (git's stat cache) must never hide an edit: same size, same second, 20 times."""
    src = tmp_path / "src"
    src.mkdir()
    bare = tmp_path / "repos" / "demo.git"
    for i in range(20):
        (src / "cm.yaml").write_text(f"a: {i % 10}\n")
        sha = publish_dir(src, bare, f"edit {i}")
        assert _git(bare, "show", f"{sha}:cm.yaml") == f"a: {i % 10}"
    assert list((bare / "rebuild-publish").glob("*.index"))  # kept for the next snapshot


def test_publish_dir_other_branch_and_errors(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "x.yaml").write_text("x: 1\n")
    bare = init_bare(tmp_path / "r.git", branch="trunk")
    sha = publish_dir(src, bare, "on trunk", branch="trunk")
    assert _git(bare, "rev-parse", "refs/heads/trunk") == sha
    with pytest.raises(GitError, match="not a folder"):
        publish_dir(tmp_path / "missing", bare, "nope")
