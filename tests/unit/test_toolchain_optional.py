"""Optional toolchain entries: which tools an install selects, how doctor reports them, and how
they are linked and built. Pure logic: nothing is built and no network is used.

No entry of versions.toml is optional today (pulumi-language-yaml and the S3 backend, now s3proxy,
became core with issue 12; helm-controller, sops and age with issue 13), so the mechanism is tested with the
``as_optional`` fixture, which marks the three that were optional last as optional again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from rebuild.core.errors import ConfigError
from rebuild.toolchain import recipes as rc
from rebuild.toolchain import registry as reg
from rebuild.toolchain import tools as tc

OPTIONAL = ["sops", "age", "helm-controller"]  # what ``as_optional`` marks optional


@pytest.fixture
def as_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mark OPTIONAL as ``optional = true``, for every Toolchain (the CLI's too)."""
    monkeypatch.setattr(reg.ToolPaths, "is_optional", lambda self, name: name in OPTIONAL)


def _stamp(t: tc.Toolchain, name: str) -> None:
    recipe = next(r for r in rc.RECIPES if r.name == name)
    d = t.tool_dir(name)
    (d / "bin").mkdir(parents=True, exist_ok=True)
    for exe in recipe.binaries:
        (d / "bin" / exe).write_text("")
    (d / reg.STAMP).write_text(json.dumps({"version": "x"}))


def test_versions_toml_marks_no_tool_optional() -> None:
    t = tc.Toolchain(root=Path("/nonexistent"))
    assert t.optional_tools() == []
    assert t.core_tools() == [r.name for r in rc.RECIPES]
    # issue 12: user stacks in Pulumi YAML and the S3 backend tests need these on every install;
    # issue 13: the local provider runs helm-controller, and the SOPS adapter and its tests run
    # sops and age-keygen
    assert {"pulumi-language-yaml", "s3proxy", "helm-controller", "sops", "age"} <= set(t.core_tools())
    for name in OPTIONAL:
        assert t.versions[name]["version"].startswith("v"), name
        assert t.install_hint(name) == "rebuild toolchain install"


def test_the_optional_marker_is_read_from_versions_toml(tmp_path: Path) -> None:
    versions = reg.load_versions()
    versions["sops"] = {**versions["sops"], "optional": "True"}  # load_versions stringifies booleans
    t = tc.Toolchain(root=tmp_path, versions=versions)
    assert t.optional_tools() == ["sops"] and "sops" not in t.core_tools()
    assert t.install_hint("sops") == "rebuild toolchain install --with sops"


def test_pins() -> None:
    v = reg.load_versions()
    assert v["sops"]["version"] == "v3.13.3"
    assert v["age"]["version"] == "v1.3.2"
    # the only helm-controller tags the proxy serves are v1.4.3 and v1.4.0
    assert v["helm-controller"]["version"] == "v1.4.3"
    assert v["pulumi-language-yaml"]["version"] == "v1.25.0"
    # a jar from Maven Central, pinned by sha256 (Central's .sha1 of the same file agrees)
    assert v["s3proxy"]["version"] == "4.1.0"
    assert v["s3proxy"]["sha256"] == "a4d025969aaf796616ed4b1e2491d87d455ce84bb28cb9db086b2e6aaa68b48d"
    assert "seaweedfs" not in v


def test_plain_selection_is_the_core_only(as_optional: None) -> None:
    t = tc.Toolchain(root=Path("/nonexistent"))
    assert t.select() == t.core_tools()
    assert t.select((), ()) == [r.name for r in rc.RECIPES if r.name not in OPTIONAL]


def test_with_adds_optional_tools_in_recipe_order(as_optional: None) -> None:
    t = tc.Toolchain(root=Path("/nonexistent"))
    got = t.select(with_=("sops,age", "helm-controller"))
    wanted = {*t.core_tools(), "sops", "age", "helm-controller"}
    assert got == [r.name for r in rc.RECIPES if r.name in wanted]
    assert t.select(with_=("optional",)) == [r.name for r in rc.RECIPES]


def test_only_selects_exactly_those_core_or_optional() -> None:
    t = tc.Toolchain(root=Path("/nonexistent"))
    assert t.select(only=("helm-controller", "pulumi,sops")) == ["pulumi", "sops", "helm-controller"]


@pytest.mark.parametrize(
    ("only", "with_", "message"),
    [
        (("nope",), (), "unknown tool(s): nope"),
        ((), ("kubernetes",), "not an optional tool: kubernetes (core tools are always installed)"),
        ((), ("helm",), "not an optional tool: helm"),
        ((), ("optional,kwok",), "not an optional tool: kwok"),
        (("sops",), ("age",), "cannot be combined"),
    ],
)
def test_bad_selections_name_the_valid_choices(
    only: tuple[str, ...], with_: tuple[str, ...], message: str, as_optional: None
) -> None:
    t = tc.Toolchain(root=Path("/nonexistent"))
    with pytest.raises(ConfigError) as err:
        t.select(only, with_)
    assert message in err.value.message and err.value.fix


def test_plain_install_skips_missing_optional_tools(tmp_path: Path, as_optional: None) -> None:
    t = tc.Toolchain(root=tmp_path)
    for name in t.core_tools():
        _stamp(t, name)
    t.plugin_dir().mkdir(parents=True)
    (t.plugin_dir() / "pulumi-resource-kubernetes").write_text("")
    # nothing to build: had the optional tools been selected this would try to run `go`
    assert tc.install(t, progress=lambda _m: None) == []


def test_install_only_an_optional_tool_builds_just_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = tc.Toolchain(root=tmp_path)
    ran: list[str] = []
    monkeypatch.setattr(tc, "check_prerequisites", lambda _root: None)
    monkeypatch.setattr(tc, "_run_recipe", lambda _t, recipe, _p: ran.append(recipe.name))
    assert tc.install(t, progress=lambda _m: None, only=["sops", "age"]) == ["sops", "age"]
    assert ran == ["sops", "age"]  # not the core tools, and not the kubernetes plugin


def test_status_marks_optional_rows_and_doctor_ignores_them(tmp_path: Path, as_optional: None) -> None:
    t = tc.Toolchain(root=tmp_path)
    for name in t.core_tools():
        _stamp(t, name)
    t.plugin_dir().mkdir(parents=True)
    (t.plugin_dir() / "pulumi-resource-kubernetes").write_text("")
    rows = {r.name: r for r in t.status()}
    assert rows["age-keygen"].optional and rows["age-keygen"].tool == "age" and not rows["age-keygen"].present
    assert rows["s3proxy.jar"].tool == "s3proxy" and rows["s3proxy.jar"].version == "4.1.0"
    java = tc.find_java()  # a prerequisite row: it says what this machine really has
    assert rows["java"].tool == "s3proxy" and rows["java"].present == java.ok
    assert rows["java"].version == (java.version or "-")
    assert not rows["kube-apiserver"].optional and rows["kube-apiserver"].present
    assert t.install_hint("helm-controller") == "rebuild toolchain install --with helm-controller"
    assert t.install_hint("kwok") == "rebuild toolchain install"


def test_doctor_lists_optional_tools_with_state_and_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_optional: None
) -> None:
    from rebuild.cli.main import main

    monkeypatch.setenv("REBUILD_CACHE", str(tmp_path))
    t = tc.Toolchain(root=tmp_path)
    for name in [*t.core_tools(), "sops"]:
        _stamp(t, name)
    t.plugin_dir().mkdir(parents=True)
    (t.plugin_dir() / "pulumi-resource-kubernetes").write_text("")
    res = CliRunner().invoke(main, ["toolchain", "doctor"])
    assert res.exit_code == 0, res.output  # missing optional tools are not an error
    out = res.output
    assert "all tools present" in out and "optional tools" in out
    sops_line = next(line for line in out.splitlines() if line.startswith("sops "))
    assert "OK" in sops_line
    helm = out[out.index("helm-controller ") :]
    assert "not installed" in helm.splitlines()[0]
    assert "install: rebuild toolchain install --with helm-controller" in helm.splitlines()[1]
    res = CliRunner().invoke(main, ["-o", "json", "toolchain", "doctor"])
    data = json.loads(res.output)
    assert data["ok"] is True
    optional = {r["name"]: r["optional"] for r in data["tools"]}
    assert optional["helm-controller"] is True and optional["pulumi-language-yaml"] is False


def test_doctor_fails_on_a_missing_core_tool_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rebuild.cli.main import main

    monkeypatch.setenv("REBUILD_CACHE", str(tmp_path))
    res = CliRunner().invoke(main, ["toolchain", "doctor"])
    assert res.exit_code == 2 and "some tools are missing" in res.output


def test_install_cli_rejects_a_core_tool_in_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rebuild.cli.main import main

    monkeypatch.setenv("REBUILD_CACHE", str(tmp_path))
    res = CliRunner().invoke(main, ["toolchain", "install", "--with", "kwok"])
    assert res.exit_code == 2 and "not an optional tool: kwok" in res.output


def test_language_hosts_are_linked_next_to_pulumi(tmp_path: Path) -> None:
    t = tc.Toolchain(root=tmp_path)
    for name in ("pulumi", "pulumi-language-python"):
        _stamp(t, name)
    tc._bundle_language_host(t)
    assert (t.bin_dir("pulumi") / "pulumi-language-python").is_symlink()
    assert not (t.bin_dir("pulumi") / "pulumi-language-yaml").exists()  # not installed: no dangling link
    _stamp(t, "pulumi-language-yaml")
    tc._bundle_language_host(t)
    link = t.bin_dir("pulumi") / "pulumi-language-yaml"
    assert link.resolve() == (t.bin_dir("pulumi-language-yaml") / "pulumi-language-yaml").resolve()
    tc._bundle_language_host(t)  # idempotent
    assert link.is_symlink()


def test_helm_controller_uses_the_flux_recipe_and_ships_crds(tmp_path: Path) -> None:
    recipes = {r.name: r for r in rc.RECIPES}
    assert recipes["helm-controller"].build is recipes["source-controller"].build
    t = tc.Toolchain(root=tmp_path)
    with pytest.raises(tc.ToolchainError) as err:
        t.flux_crds("helm-controller")
    assert err.value.fix == "run `rebuild toolchain install`"  # a core tool since issue 13


def test_go_module_recipe_writes_the_wrapper_and_builds_each_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = tc.Toolchain(root=tmp_path)
    b = rc.Build(t, "age", lambda _m: None)
    b.dir.mkdir(parents=True)
    (b.stage / "bin").mkdir(parents=True)
    gomod = tmp_path / "age.mod"
    gomod.write_text("module filippo.io/age\n\nreplace example.com/x => example.com/x v1.0.0\nreplace example.com/y => ../y\n")
    calls: list[list[str]] = []
    monkeypatch.setattr(rc.Build, "module_info", lambda self, mod: {"GoMod": str(gomod), "Dir": str(tmp_path)})
    monkeypatch.setattr(rc.Build, "run", lambda self, argv, **kw: calls.append(argv) or "")
    rc._build_age(b)
    wrapper = (b.dir / "go.mod").read_text()
    assert "require filippo.io/age v1.3.2" in wrapper
    assert "replace example.com/x => example.com/x v1.0.0" in wrapper and "../y" not in wrapper
    assert calls[0] == ["go", "mod", "tidy"]
    built = [c for c in calls if c[:2] == ["go", "build"]]
    assert [Path(c[c.index("-o") + 1]).name for c in built] == ["age", "age-keygen"]
    assert built[0][-1] == "filippo.io/age/cmd/age"


def test_version_ldflags_of_pulumi_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = tc.Toolchain(root=tmp_path)
    flags: dict[str, str] = {}
    for name, fn in (("pulumi-language-yaml", rc._build_pulumi_yaml),):
        b = rc.Build(t, name, lambda _m: None)
        b.dir.mkdir(parents=True)
        gomod = tmp_path / f"{name}.mod"
        gomod.write_text("module x\n")
        monkeypatch.setattr(rc.Build, "module_info", lambda self, mod, g=gomod: {"GoMod": str(g)})
        monkeypatch.setattr(rc.Build, "run", lambda self, argv, **kw: "")
        monkeypatch.setattr(
            rc.Build, "go_build", lambda self, out, pkg, *, tags="", ldflags="", n=name: flags.__setitem__(n, ldflags)
        )
        fn(b)
    assert flags["pulumi-language-yaml"] == "-X github.com/pulumi/pulumi-yaml/pkg/version.Version=v1.25.0"


def test_a_tool_may_pin_a_newer_go_toolchain(tmp_path: Path) -> None:
    versions = reg.load_versions()
    versions["helm-controller"] = {**versions["helm-controller"], "gotoolchain": "go1.27.3"}
    t = tc.Toolchain(root=tmp_path, versions=versions)
    assert rc.Build(t, "helm-controller", lambda _m: None).goenv()["GOTOOLCHAIN"] == "go1.27.3"
    assert rc.Build(t, "sops", lambda _m: None).goenv()["GOTOOLCHAIN"] == "local"


def test_builds_skip_dwarf_and_collect_less_unless_the_caller_sets_gogc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = tc.Toolchain(root=tmp_path, versions=reg.load_versions())
    monkeypatch.delenv("GOGC", raising=False)
    env = rc.Build(t, "kwok", lambda _m: None).goenv()
    assert env["GOFLAGS"].split() == ["-mod=mod", "-gcflags=all=-dwarf=false"]
    assert env["GOGC"] == "400"
    monkeypatch.setenv("GOGC", "100")
    assert rc.Build(t, "kwok", lambda _m: None).goenv()["GOGC"] == "100"


def test_only_optional_tools_already_built_takes_no_lock_even_without_the_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = tc.Toolchain(root=tmp_path)
    _stamp(t, "sops")

    def no_lock(*_a: object, **_k: object) -> None:
        raise AssertionError("took the install lock for nothing")

    monkeypatch.setattr(tc, "_install_lock", no_lock)
    monkeypatch.setattr(tc, "check_prerequisites", no_lock)
    assert tc.install(t, progress=lambda _m: None, only=["sops"]) == []


DEMO = [
    "kubernetes",
    "kwok",
    "pulumi",
    "pulumi-language-python",
    "pulumi-resource-kubernetes",
    "source-controller",
    "kustomize-controller",
    "sops",  # the example's SOPS-encrypted Secrets: verify decrypts them in memory (issue 13)
    "age",  # age-keygen -y names the key file's public key when a decrypt fails
    "helm-controller",  # the local provider runs it beside the other two (issue 13)
    "pulumi-language-yaml",  # the example's infra/cluster-facts is a Pulumi YAML project (issue 12)
]


def test_demo_profile_is_what_the_demo_uses_and_nothing_more() -> None:
    """`make demo` builds the local cluster, Pulumi (with its Python and YAML hosts), Flux's three
    controllers and sops/age for the example's encrypted Secrets: no Gitea, no Argo CD manifests,
    no S3Proxy (issue 14, item 8)."""
    t = tc.Toolchain(root=Path("/nonexistent"))
    assert t.demo_tools() == DEMO
    assert t.select(only=("demo",)) == DEMO
    assert set(DEMO) < set(t.core_tools())
    assert "gitea" not in DEMO and "argocd-manifests" not in DEMO and "s3proxy" not in DEMO
    # the word combines with names like any other --only entry, in recipe order
    assert t.select(only=("demo,gitea",)) == [r.name for r in rc.RECIPES if r.name in {*DEMO, "gitea"}]
    with pytest.raises(ConfigError) as err:
        t.select(only=("demos",))
    assert "unknown tool(s): demos" in err.value.message and "demo" in (err.value.fix or "")


def test_make_demo_installs_only_the_demo_profile() -> None:
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    block = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "toolchain install --only demo" in block
    assert "toolchain" not in block.splitlines()[0]  # not the full `toolchain` target
    test_block = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "toolchain" in test_block.splitlines()[0]  # make test still installs every core tool


def test_cli_install_only_demo_builds_the_demo_profile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from rebuild.cli import main as cli

    seen: list[list[str]] = []

    def fake_install(t: tc.Toolchain, progress: object = None, only: list[str] | None = None) -> list[str]:
        seen.append(list(only or []))
        return []

    monkeypatch.setenv("REBUILD_CACHE", str(tmp_path))
    monkeypatch.setattr(tc, "install", fake_install)
    r = CliRunner().invoke(cli.main, ["toolchain", "install", "--only", "demo"])
    assert r.exit_code == 0, r.output
    assert seen == [DEMO]
