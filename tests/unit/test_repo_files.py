"""The checkout's files as capture's backport sees them: read on first use, never outside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

from rebuild.capture.backport.model import Texts
from rebuild.capture.run import RepoFiles


def _repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "apps" / "web").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / ".git" / "config.yaml").write_text("not: a repo file\n")
    (root / "apps" / "web" / "deploy.yaml").write_text("kind: Deployment\n")
    (root / "apps" / "web" / "app.env").write_text("A=1\n")
    (root / "apps" / "bad.yaml").write_bytes(b"\xff\xfe not utf-8")
    (tmp_path / "outside.yaml").write_text("secret: elsewhere\n")
    os.symlink(tmp_path / "outside.yaml", root / "apps" / "link.yaml")
    return root


def test_files_are_read_when_first_asked_for_not_when_listed(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    files = RepoFiles(root, ["apps/web/app.env"])
    (root / "apps" / "web" / "deploy.yaml").write_text("kind: Deployment # edited after the walk\n")
    assert files["apps/web/deploy.yaml"] == "kind: Deployment # edited after the walk\n"
    (root / "apps" / "web" / "deploy.yaml").write_text("changed again\n")
    assert files["apps/web/deploy.yaml"] == "kind: Deployment # edited after the walk\n"  # read once
    assert files["apps/web/app.env"] == "A=1\n"  # named by a kustomization, not a YAML file


def test_names_found_and_what_is_absent(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    files = RepoFiles(root)
    assert sorted(files) == ["apps/bad.yaml", "apps/link.yaml", "apps/web/deploy.yaml"]  # .git skipped
    assert "apps/web/deploy.yaml" in files
    assert "apps/link.yaml" not in files  # a symlink out of the checkout
    assert "apps/bad.yaml" not in files  # not UTF-8
    assert "apps/web/app.env" not in files  # not YAML and not named
    assert files.get("apps/link.yaml") is None
    assert files.get("nowhere.yaml") is None


def test_texts_overlay_edits_without_touching_the_files(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    files = RepoFiles(root)
    texts = Texts(files)
    before = texts.copy()
    texts["apps/web/deploy.yaml"] = "kind: Deployment\nspec: {}\n"
    texts["new.yaml"] = "x: 1\n"
    assert texts["apps/web/deploy.yaml"] == "kind: Deployment\nspec: {}\n"
    assert files["apps/web/deploy.yaml"] == "kind: Deployment\n"
    assert before["apps/web/deploy.yaml"] == "kind: Deployment\n"  # the snapshot kept the old text
    assert "new.yaml" in texts and "new.yaml" not in before
    assert texts.edits == {"apps/web/deploy.yaml": "kind: Deployment\nspec: {}\n", "new.yaml": "x: 1\n"}
    assert sorted(texts) == ["apps/bad.yaml", "apps/link.yaml", "apps/web/deploy.yaml", "new.yaml"]
