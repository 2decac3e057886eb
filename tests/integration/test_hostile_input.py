"""Hostile input (issue 6, first part): every case is refused with exit 2, names the file and
line, applies nothing, and shows no traceback. Runs the real CLI against real git (rebuild's
own git server publishes each case as a repository)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from rebuild.adapters import gitserver

pytestmark = pytest.mark.integration

GOOD_CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n  namespace: default\ndata:\n  k: v\n"
CONFIG = "sources:\n  - {name: demo, url: ., branch: main, path: apps}\ncluster: {provider: local, name: hostile}\n"


def _write(root: Path, rel: str, data: str | bytes) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        p.write_bytes(data)
    else:
        p.write_text(data)


def bomb() -> str:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefghij"):
        prev = "abcdefghij"[i]
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb, namespace: default}\ndata:\n  " + "\n  ".join(lines) + "\n"


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "invalid-yaml": (lambda r: _write(r, "apps/bad.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [x\n"),
                     "apps/bad.yaml:5: invalid YAML"),
    "alias-bomb": (lambda r: _write(r, "apps/bomb.yaml", bomb()), "document expands to too many nodes (alias bomb?)"),
    "huge-manifest": (lambda r: _write(r, "apps/huge.yaml", GOOD_CM + "  big: " + "x" * (50 * 1024 * 1024) + "\n"),
                      "apps/huge.yaml: file is 50 MB; manifests over 20 MB are refused"),
    "non-utf8": (lambda r: _write(r, "apps/latin1.yaml", b"apiVersion: v1\nkind: ConfigMap\n# caf\xe9\n"),
                 "apps/latin1.yaml:3: not valid UTF-8 (byte 0xe9)"),
    "duplicate-keys": (lambda r: _write(r, "apps/dup.yaml", GOOD_CM + "  k: w\n"), "apps/dup.yaml:8: duplicate key 'k'"),
    "missing-fields": (lambda r: _write(r, "apps/nokind.yaml", "apiVersion: v1\nmetadata: {name: x}\n"),
                       "apps/nokind.yaml:1: object is missing kind"),
    "unknown-kind": (lambda r: _write(r, "apps/cr.yaml", "apiVersion: x.example.com/v1\nkind: Gizmo\nmetadata: {name: g}\n"),
                     "apps/cr.yaml:1: Gizmo/g: kind Gizmo (x.example.com/v1) is not defined"),
    "kustomization-outside-repo": (
        lambda r: _write(r, "apps/kustomization.yaml", "resources:\n  - ../../../etc/passwd\n"),
        "apps/kustomization.yaml:2: ",
    ),
    "symlink-out-of-repo": (lambda r: os.symlink("/etc/hostname", r / "apps" / "link.yaml"),
                            "apps/link.yaml is a link to /etc/hostname outside the repository"),
    "shell-metacharacters-in-file-name": (lambda r: _write(r, "apps/$(touch PWNED);`id`.yaml", "a: [\n"),
                                          "apps/$(touch PWNED);`id`.yaml:2: invalid YAML"),
}


def run_plan(config: Path, state: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, REBUILD_STATE_DIR=str(state))
    return subprocess.run([sys.executable, "-m", "rebuild.cli", "--config", str(config), "plan"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=config.parent)


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_repo_content_is_refused(case: str, tmp_path: Path, toolchain: object) -> None:
    repo = tmp_path / "repo"
    _write(repo, "apps/ok.yaml", GOOD_CM)
    _write(repo, "rebuild.yaml", CONFIG)
    make, expected = CASES[case]
    make(repo)
    state = tmp_path / "state"
    try:
        r = run_plan(repo / "rebuild.yaml", state)
    finally:
        gitserver.stop_server(state / "gitserver")
    assert r.returncode == 2, r.stdout + r.stderr
    assert expected in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "fix:" in r.stderr
    assert not (state / "clusters").exists()  # nothing was created, nothing applied
    assert not list(tmp_path.rglob("PWNED"))  # no shell ever saw a file name


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("sources: 3\ncluster: [x]\n", "rebuild.yaml:1: sources: must be a non-empty list"),
        ("sources:\n  - {name: d, url: 'https://u:p@git.example.com/r.git'}\ncluster: {name: c}\n",
         "rebuild.yaml:2: sources.0.url: the URL contains credentials"),
        ("sources:\n  - {name: d, url: ., branch: 'main; touch PWNED'}\ncluster: {name: c}\n",
         "rebuild.yaml:2: sources.0.branch: 'main; touch PWNED' is not a valid branch name"),
        ("sources:\n  - {name: d, url: .}\ncluster: {name: c}\ncapture:\n  forge: {kind: gitea, url: 'https://bot:tok@git.example.com',"
         " repo: a/b}\n", "rebuild.yaml:5: capture.forge.url: the URL contains credentials"),
        ("sources:\n  - {name: d, url: .}\ncluster: {name: c, nodes: lots}\n",
         "rebuild.yaml:3: cluster.nodes: must be an integer"),
    ],
)
def test_hostile_config_is_refused(config: str, expected: str, tmp_path: Path, toolchain: object) -> None:
    repo = tmp_path / "repo"
    _write(repo, "apps/ok.yaml", GOOD_CM)
    _write(repo, "rebuild.yaml", config)
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
