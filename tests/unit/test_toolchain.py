from __future__ import annotations

import json
from pathlib import Path

import pytest

from rebuild.core.errors import ToolchainError
from rebuild.toolchain import recipes as rc
from rebuild.toolchain import registry as reg
from rebuild.toolchain import tools as tc

GOMOD = """module github.com/example/x

go 1.24

replace github.com/a/b => ../b

replace github.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e

replace (
	k8s.io/api => ./staging/src/k8s.io/api
	gopkg.in/yaml.v3 => gopkg.in/yaml.v3 v3.0.1 // pinned
)

require k8s.io/api v0.0.0
"""


def test_replace_lines_keeps_only_non_local_directives(tmp_path: Path) -> None:
    f = tmp_path / "go.mod"
    f.write_text(GOMOD)
    assert rc._replace_lines(f) == [
        "github.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e",
        "gopkg.in/yaml.v3 => gopkg.in/yaml.v3 v3.0.1",
    ]
    assert rc._local_replaces(f) == [("github.com/a/b", "../b"), ("k8s.io/api", "./staging/src/k8s.io/api")]


def test_versions_pin_every_recipe() -> None:
    versions = reg.load_versions()
    for recipe in rc.RECIPES:
        assert versions[recipe.name]["version"], recipe.name


def test_pulumi_kubernetes_python_package_matches_provider_binary() -> None:
    import importlib.metadata

    provider = reg.load_versions()["pulumi-resource-kubernetes"]["version"]
    assert importlib.metadata.version("pulumi-kubernetes") == provider


def _fake_installed(root: Path) -> tc.Toolchain:
    t = tc.Toolchain(root=root)
    for recipe in rc.RECIPES:
        d = t.tool_dir(recipe.name)
        (d / "bin").mkdir(parents=True)
        for exe in recipe.binaries:
            (d / "bin" / exe).write_text("")
        (d / reg.STAMP).write_text(json.dumps({"version": "x"}))
    (t.plugin_dir()).mkdir(parents=True)
    (t.plugin_dir() / "pulumi-resource-kubernetes").write_text("")
    return t


def test_install_is_a_no_op_when_everything_is_stamped(tmp_path: Path) -> None:
    t = _fake_installed(tmp_path)
    assert tc.install(t, progress=lambda _m: None) == []
    assert all(s.present for s in t.status())


def test_status_reports_missing_tools(tmp_path: Path) -> None:
    t = tc.Toolchain(root=tmp_path)
    rows = t.status()
    # java is S3Proxy's prerequisite: a property of the machine, not of this (empty) cache
    assert rows and not any(r.present for r in rows if r.name != "java")


def test_missing_go_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no `go` here
    with pytest.raises(ToolchainError) as err:
        tc.check_prerequisites(tmp_path / "cache")
    assert "Go" in str(err.value) and err.value.fix


def test_unwritable_cache_is_a_clear_error(tmp_path: Path) -> None:
    # A path below a regular file cannot be created, even by root (who ignores mode bits).
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ToolchainError) as err:
        tc.check_prerequisites(blocker / "cache")
    assert "not writable" in str(err.value) and err.value.fix


def test_classify_go_failures() -> None:
    assert "disk" in (rc._classify_go_failure("write /x: no space left on device") or "")
    assert "proxy" in (rc._classify_go_failure("reading https://proxy.golang.org/x/@v/list: 403 Forbidden") or "")
    assert rc._classify_go_failure("syntax error") is None
