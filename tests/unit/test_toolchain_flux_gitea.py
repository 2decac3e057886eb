"""The Flux controller and Gitea recipes, with `go` replaced by a recorder (no network, no build)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from rebuild.core.errors import ToolchainError
from rebuild.toolchain import recipes as rc
from rebuild.toolchain import tools as tc

FLUX_GOMOD = """module github.com/fluxcd/source-controller

go 1.26.0

replace github.com/fluxcd/source-controller/api => ./api

replace github.com/opencontainers/go-digest => github.com/opencontainers/go-digest v1.0.1-0.20220411205349-bde1400a84be

require github.com/fluxcd/source-controller/api v1.9.5
"""


class Recorder:
    def __init__(self, module_dir: Path) -> None:
        self.module_dir = module_dir
        self.calls: list[tuple[list[str], dict[str, str] | None]] = []

    def module_info(self, mod: str) -> dict[str, str]:
        return {"Dir": str(self.module_dir), "GoMod": str(self.module_dir / "go.mod")}

    def run(self, argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
        self.calls.append((argv, env))
        if "-o" in argv:
            out = Path(argv[argv.index("-o") + 1])
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("binary")
        return ""


def _build(tmp_path: Path, name: str, module_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[rc.Build, Recorder]:
    rec = Recorder(module_dir)
    monkeypatch.setattr(rc.Build, "module_info", rec.module_info)
    monkeypatch.setattr(rc.Build, "run", rec.run)
    t = tc.Toolchain(root=tmp_path / "cache")
    b = rc.Build(t, name, lambda _m: None)
    b.dir.mkdir(parents=True)
    (b.stage / "bin").mkdir(parents=True)
    return b, rec


def _read_only_tree(root: Path, files: dict[str, str]) -> None:
    """Like the Go module cache: files 0444, folders 0555."""
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(0o444)
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        d.chmod(0o555)


def test_flux_recipe_requires_the_api_tag_and_ships_the_crds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = tmp_path / "mod"
    _read_only_tree(
        mod,
        {
            "go.mod": FLUX_GOMOD,
            "config/crd/bases/source.toolkit.fluxcd.io_gitrepositories.yaml": "kind: CustomResourceDefinition\n",
            "config/crd/bases/source.toolkit.fluxcd.io_buckets.yaml": "kind: CustomResourceDefinition\n",
            "config/manager/deployment.yaml": "kind: Deployment\n",
            "config/testdata/minio/secret.yaml": "kind: Secret\n",
        },
    )
    b, rec = _build(tmp_path, "source-controller", mod, monkeypatch)
    rc._build_flux_controller(b)

    gomod = (b.dir / "go.mod").read_text()
    v = b.version
    assert f"require github.com/fluxcd/source-controller {v}" in gomod
    assert f"require github.com/fluxcd/source-controller/api {v}" in gomod
    assert "./api" not in gomod
    assert "replace github.com/opencontainers/go-digest => github.com/opencontainers/go-digest v1.0.1-" in gomod
    for pinned in rc._pinned_replaces(b):
        assert f"replace {pinned}" in gomod
    tidy = rec.calls[0][0]
    assert tidy[:3] == ["go", "mod", "tidy"] and "-e" in tidy
    assert rec.calls[1][0][-1] == "github.com/fluxcd/source-controller"
    crds = sorted(p.name for p in (b.stage / "crds").iterdir())
    assert crds == ["source.toolkit.fluxcd.io_buckets.yaml", "source.toolkit.fluxcd.io_gitrepositories.yaml"]
    assert sorted(p.name for p in (b.stage / "config").iterdir()) == ["crd", "manager"]  # no testdata
    assert (b.stage / "config" / "manager" / "deployment.yaml").read_text() == "kind: Deployment\n"


def test_pinned_replaces_parse_the_versions_entry(tmp_path: Path) -> None:
    t = tc.Toolchain(root=tmp_path, versions={"x": {"version": "v1", "replace": " a => a v1 ;; b => c v2 "}})
    assert rc._pinned_replaces(rc.Build(t, "x", lambda _m: None)) == ["a => a v1", "b => c v2"]
    t2 = tc.Toolchain(root=tmp_path, versions={"x": {"version": "v1"}})
    assert rc._pinned_replaces(rc.Build(t2, "x", lambda _m: None)) == []


def test_gitea_recipe_builds_with_cgo_sqlite_and_copies_static_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = tmp_path / "mod"
    _read_only_tree(
        mod,
        {
            "go.mod": "module code.gitea.io/gitea\n\ngo 1.26.2\n\nreplace github.com/a/b => github.com/c/b v1.0.0\n",
            "templates/base/head.tmpl": "<html>",
            "options/locale/locale_en-US.ini": "x=y",
            "public/assets/img/logo.svg": "<svg/>",
            "web_src/js/index.js": "not copied",
        },
    )
    b, rec = _build(tmp_path, "gitea", mod, monkeypatch)
    rc._build_gitea(b)

    assert "replace github.com/a/b => github.com/c/b v1.0.0" in (b.dir / "go.mod").read_text()
    argv, env = rec.calls[-1]
    assert env is not None and env["CGO_ENABLED"] == "1"
    assert argv[argv.index("-tags") + 1] == "sqlite,sqlite_unlock_notify"
    assert f"-X main.Version={b.version.lstrip('v')}" in argv[argv.index("-ldflags") + 1]
    static = b.stage / "static"
    assert sorted(p.name for p in static.iterdir()) == ["options", "public", "templates"]
    head = static / "templates" / "base" / "head.tmpl"
    assert head.read_text() == "<html>"
    assert stat.S_IMODE(head.stat().st_mode) == 0o644
    assert stat.S_IMODE((static / "templates").stat().st_mode) == 0o755


def test_locating_flux_crds_and_gitea_static(tmp_path: Path) -> None:
    t = tc.Toolchain(root=tmp_path)
    with pytest.raises(ToolchainError, match="no CRDs for kustomize-controller"):
        t.flux_crds("kustomize-controller")
    crds = t.tool_dir("kustomize-controller") / "crds"
    crds.mkdir(parents=True)
    (crds / "b.yaml").write_text("")
    (crds / "a.yaml").write_text("")
    assert [p.name for p in t.flux_crds("kustomize-controller")] == ["a.yaml", "b.yaml"]
    assert t.gitea_static_root() == t.tool_dir("gitea") / "static"


def test_new_recipes_are_registered() -> None:
    names: dict[str, Any] = {r.name: r for r in rc.RECIPES}
    assert names["source-controller"].binaries == ("source-controller",)
    assert names["kustomize-controller"].binaries == ("kustomize-controller",)
    assert names["gitea"].binaries == ("gitea",)
