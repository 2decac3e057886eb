"""Build, cache and locate the external programs rebuild drives.

Why this exists: the machines rebuild is developed and tested on reach the Go module proxy
but no release download site, so kube-apiserver, etcd, kwok, the Pulumi engine, its Python
language host and the Kubernetes provider are built here from their Go modules. Each build
goes through a small generated *wrapper module* (``go install pkg@v`` refuses modules with
``replace`` directives) into ``$REBUILD_CACHE/tools/<name>/<version>/``; a finished tool is
marked by a stamp file and never rebuilt, so a warm ``install`` is a few stat calls.

Versions come from ``rebuild/versions.toml`` only. One file lock serialises installs so two
runs (a developer's and CI's, or two pytest workers) never build into the same folder.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from rebuild.core.errors import ConfigError, ToolchainError
from rebuild.core.progress import Progress

# Disk a cold build needs: Go's module and build caches plus the binaries (measured ~9 GB).
MIN_FREE_BYTES = 6 * 1024**3

STAMP = ".complete"


def cache_root() -> Path:
    """Where tools are cached: $REBUILD_CACHE, else $XDG_CACHE_HOME/rebuild, else ~/.cache/rebuild."""
    env = os.environ.get("REBUILD_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return (base / "rebuild").resolve()


def langhost_digest() -> str:
    import hashlib

    src = resources.files("rebuild.toolchain").joinpath("langhost", "main.go").read_bytes()
    return hashlib.sha256(src).hexdigest()[:10]


def load_versions() -> dict[str, dict[str, str]]:
    text = resources.files("rebuild").joinpath("versions.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    return {k: {kk: str(vv) for kk, vv in v.items()} for k, v in data.items()}


@dataclass(frozen=True)
class ToolStatus:
    name: str
    version: str
    path: Path
    present: bool
    detail: str = ""
    # Optional tools (``optional = true`` in versions.toml) are listed by ``doctor`` but a
    # missing one is not an error: a plain install never builds them.
    optional: bool = False
    tool: str = ""  # the versions.toml / recipe name, when it differs from the binary's


@dataclass
class Toolchain:
    """Paths of installed tools, keyed by pinned version; no I/O beyond stat on construction."""

    root: Path = field(default_factory=cache_root)
    versions: dict[str, dict[str, str]] = field(default_factory=load_versions)

    def tool_dir(self, name: str) -> Path:
        return self.root / "tools" / name / self.cache_key(name)

    def cache_key(self, name: str) -> str:
        """The pinned version; for tools built from rebuild's own sources, plus their hash,
        so an edited source is rebuilt instead of silently reusing the old binary."""
        version = self.versions[name]["version"]
        if name == "pulumi-language-python":
            return f"{version}-{langhost_digest()}"
        return version

    def bin_dir(self, name: str) -> Path:
        return self.tool_dir(name) / "bin"

    @property
    def pulumi_home(self) -> Path:
        return self.root / "pulumi-home"

    def binary(self, tool: str, exe: str | None = None) -> Path:
        path = self.bin_dir(tool) / (exe or tool)
        if not path.exists():
            raise ToolchainError(
                f"{exe or tool} ({tool} {self.versions[tool]['version']}) is not installed at {path}",
                fix=f"run `{self.install_hint(tool)}`",
            )
        return path

    def install_hint(self, tool: str) -> str:
        """The command that installs a tool: optional ones must be asked for by name."""
        return f"rebuild toolchain install --with {tool}" if self.is_optional(tool) else "rebuild toolchain install"

    def kwok_stages(self) -> Path:
        return self.tool_dir("kwok") / "stages.yaml"

    def flux_crds(self, controller: str) -> list[Path]:
        """The CRD manifests shipped with a Flux controller (``source-controller``,
        ``kustomize-controller`` or the optional ``helm-controller``), copied from its
        module's ``config/crd/bases``."""
        crds = sorted((self.tool_dir(controller) / "crds").glob("*.yaml"))
        if not crds:
            raise ToolchainError(
                f"no CRDs for {controller} {self.versions[controller]['version']} under {self.tool_dir(controller) / 'crds'}",
                fix=f"run `{self.install_hint(controller)}`",
            )
        return crds

    def flux_config(self, controller: str) -> Path:
        """The controller's upstream ``config/`` kustomize bases (crd, rbac, manager, default)."""
        return self.tool_dir(controller) / "config"

    def argocd_install_manifest(self) -> Path:
        """Argo CD's ``manifests/install.yaml`` of the pinned version (from its Go module)."""
        path = self.tool_dir("argocd-manifests") / "install.yaml"
        if not path.exists():
            raise ToolchainError(f"Argo CD install manifest missing at {path}", fix="run `rebuild toolchain install`")
        return path

    def gitea_static_root(self) -> Path:
        """Gitea's STATIC_ROOT_PATH: templates/, options/ and public/ copied from its module
        (the binary is built without the ``bindata`` tag, so it reads them from disk)."""
        return self.tool_dir("gitea") / "static"

    def installed(self, name: str) -> bool:
        return (self.tool_dir(name) / STAMP).exists()

    def is_optional(self, name: str) -> bool:
        """Whether versions.toml marks a tool ``optional = true`` (not part of a plain install).
        ``load_versions`` stringifies values, so the TOML boolean arrives as ``"True"``."""
        return self.versions.get(name, {}).get("optional", "").lower() == "true"

    def core_tools(self) -> list[str]:
        """What a plain ``rebuild toolchain install`` builds (every recipe not optional)."""
        return [r.name for r in RECIPES if not self.is_optional(r.name)]

    def optional_tools(self) -> list[str]:
        return [r.name for r in RECIPES if self.is_optional(r.name)]

    def demo_tools(self) -> list[str]:
        """What ``make demo`` needs (``demo = true`` in versions.toml): a local cluster, Pulumi and
        Flux's source and kustomize controllers; not Gitea or Argo CD's manifests, which the demo
        never uses. ``--only demo`` installs exactly these."""
        return [r.name for r in RECIPES if self.versions.get(r.name, {}).get("demo", "").lower() == "true"]

    def select(self, only: Sequence[str] = (), with_: Sequence[str] = ()) -> list[str]:
        """The recipe names an install builds, in recipe order.

        ``only``: exactly these tools (any recipe, core or optional); the word ``demo`` stands for
        the tools ``make demo`` needs. ``with_``: the core tools plus these optional ones; the word
        ``optional`` stands for all of them. Both accept comma-separated lists (``--with sops,age``).
        Unknown names fail with the valid ones.
        """
        only_names = _split_names(only)
        with_names = _split_names(with_)
        if only_names and with_names:
            raise ConfigError("--only and --with cannot be combined", fix="use --only NAME,... or --with NAME,...")
        known = [r.name for r in RECIPES]
        if only_names:
            unknown = [n for n in only_names if n not in known and n != "demo"]
            if unknown:
                raise ConfigError(
                    f"unknown tool(s): {', '.join(unknown)}",
                    fix=f"choose from {', '.join(known)} or demo (rebuild/versions.toml)",
                )
            wanted = set(only_names) | (set(self.demo_tools()) if "demo" in only_names else set())
            return [n for n in known if n in wanted]
        optional = self.optional_tools()
        wanted = set(optional) if "optional" in with_names else set(with_names)
        bad = sorted(set(with_names) - set(optional) - {"optional"})
        if bad:
            core = [n for n in bad if n in known]
            raise ConfigError(
                f"not an optional tool: {', '.join(bad)}"
                + (" (core tools are always installed)" if core and len(core) == len(bad) else ""),
                fix=f"--with takes {', '.join([*optional, 'optional'])}",
            )
        return [n for n in known if n in wanted or not self.is_optional(n)]

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for running pulumi and friends offline, with our binaries first on PATH."""
        env = dict(os.environ if base is None else base)
        # Only pulumi's folder: the language host is linked into it (see _bundle_language_host),
        # where the engine looks for bundled plugins first.
        env["PATH"] = os.pathsep.join([str(self.bin_dir("pulumi")), env.get("PATH", "")])
        env["PULUMI_HOME"] = str(self.pulumi_home)
        env["PULUMI_SKIP_UPDATE_CHECK"] = "true"
        env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] = "true"
        env.setdefault("PULUMI_PYTHON_CMD", sys.executable)
        return env

    def status(self) -> list[ToolStatus]:
        out: list[ToolStatus] = []
        for spec in RECIPES:
            version = self.versions[spec.name]["version"]
            opt = self.is_optional(spec.name)
            for exe in spec.binaries:
                path = self.bin_dir(spec.name) / exe
                ok = path.exists() and self.installed(spec.name)
                shown = self.versions[spec.name].get(exe, version)  # e.g. etcd's own pin in [kubernetes]
                out.append(ToolStatus(exe, shown, path, ok, optional=opt, tool=spec.name))
            if not spec.binaries:
                out.append(
                    ToolStatus(spec.name, version, self.tool_dir(spec.name), self.installed(spec.name), spec.note, opt, spec.name)
                )
        plugin = self.plugin_dir()
        out.append(
            ToolStatus(
                "plugin resource-kubernetes",
                self.versions["pulumi-resource-kubernetes"]["version"],
                plugin,
                plugin.joinpath("pulumi-resource-kubernetes").exists(),
            )
        )
        return out

    def plugin_dir(self) -> Path:
        v = self.versions["pulumi-resource-kubernetes"]["version"]
        return self.pulumi_home / "plugins" / f"resource-kubernetes-v{v}"


# --------------------------------------------------------------------------- building


def _default_progress(msg: str) -> None:
    print(f"[toolchain] {msg}", file=sys.stderr, flush=True)


@dataclass
class _Build:
    """One wrapper-module build: a folder, a log and the go environment."""

    tc: Toolchain
    name: str
    progress: Progress

    @property
    def version(self) -> str:
        return self.tc.versions[self.name]["version"]

    @property
    def pins(self) -> dict[str, str]:
        return self.tc.versions[self.name]

    @property
    def dir(self) -> Path:
        return self.tc.root / "build" / f"{self.name}-{self.version}"

    @property
    def log(self) -> Path:
        return self.dir / "build.log"

    @property
    def stage(self) -> Path:
        return self.tc.root / "tools" / self.name / f".{self.tc.cache_key(self.name)}.partial"

    def goenv(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            CGO_ENABLED="0",
            GOFLAGS="-mod=mod",
            # The machine's own Go, unless versions.toml names a newer one for this tool only
            # (``gotoolchain = "go1.27.3"``: the go command fetches it from the module proxy).
            GOTOOLCHAIN=self.pins.get("gotoolchain", "local"),
            GOWORK="off",
        )
        env.update(extra)
        return env

    def run(self, argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
        """Run one build command, appending its output to the log; raise with the log's tail."""
        cwd = cwd or self.dir
        with self.log.open("a", encoding="utf-8") as log:
            log.write(f"\n$ {' '.join(argv)}\n")
            log.flush()
            proc = subprocess.run(
                argv,
                cwd=cwd,
                env=env or self.goenv(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                check=False,
            )
            log.write(proc.stdout)
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
            hint = _classify_go_failure(proc.stdout)
            raise ToolchainError(
                f"building {self.name} {self.version} failed at `{' '.join(argv[:3])}`:\n{tail}",
                fix=hint or f"read {self.log}",
            )
        return proc.stdout

    def module_info(self, mod: str) -> dict[str, str]:
        out = self.run(["go", "mod", "download", "-json", mod])
        info: dict[str, str] = json.loads(out[out.index("{") :])
        if info.get("Error"):
            raise ToolchainError(f"go could not download {mod}: {info['Error']}", fix=_PROXY_FIX)
        return info

    def write_module(self, requires: list[str], replaces: list[str], imports: list[str]) -> None:
        body = ["module rebuild.local/build/" + self.name, "", "go 1.24", ""]
        body += [f"require {r}" for r in requires]
        body += [""] + [f"replace {r}" for r in replaces]
        (self.dir / "go.mod").write_text("\n".join(body) + "\n", encoding="utf-8")
        tools = ["//go:build tools", "", "package tools", "", "import ("]
        tools += [f'\t_ "{i}"' for i in imports] + [")", ""]
        (self.dir / "tools.go").write_text("\n".join(tools), encoding="utf-8")

    def go_build(self, out: Path, pkg: str, *, tags: str = "", ldflags: str = "") -> None:
        argv = ["go", "build", "-trimpath", "-o", str(out)]
        if tags:
            argv += ["-tags", tags]
        argv += ["-ldflags", f"-s -w {ldflags}".strip(), pkg]
        self.run(argv)


_PROXY_FIX = (
    "check that the Go module proxy is reachable (go env GOPROXY) and that the version in rebuild/versions.toml is served"
)


def _classify_go_failure(output: str) -> str | None:
    if "no space left on device" in output:
        return "free disk space (a cold build needs about 9 GB for Go's caches)"
    if re.search(r"(dial tcp|proxyconnect|no such host|403 Forbidden|410 Gone|404 Not Found)", output):
        return _PROXY_FIX
    if "requires go >=" in output or "go: updates to go.mod needed" in output:
        return "use a newer Go toolchain (see docs/toolchain.md)"
    return None


def _replace_lines(gomod: Path, *, skip_local: bool = True) -> list[str]:
    """The non-local ``replace`` directives of a go.mod, as ``a => b v`` strings."""
    out: list[str] = []
    text = gomod.read_text(encoding="utf-8")
    block = False
    for raw in text.splitlines():
        line = raw.split("//")[0].strip()
        if line.startswith("replace ("):
            block = True
            continue
        if block and line == ")":
            block = False
            continue
        if line.startswith("replace "):
            line = line[len("replace ") :].strip()
        elif not block:
            continue
        if "=>" not in line:
            continue
        target = line.split("=>", 1)[1].strip()
        if skip_local and target.startswith("."):
            continue
        out.append(line)
    return out


def _local_replaces(gomod: Path) -> list[tuple[str, str]]:
    """``(module, ./path)`` pairs of a go.mod's local replace directives."""
    pairs: list[tuple[str, str]] = []
    for line in _replace_lines(gomod, skip_local=False):
        left, right = (s.strip() for s in line.split("=>", 1))
        if right.startswith("."):
            pairs.append((left.split()[0], right))
    return pairs


# --------------------------------------------------------------------------- recipes


def _build_kubernetes(b: _Build) -> None:
    v = b.version
    info = b.module_info(f"k8s.io/kubernetes@{v}")
    staging = [m for m, _ in _local_replaces(Path(info["GoMod"]))]
    staged_v = "v0." + v.split(".", 1)[1]  # v1.34.4 -> v0.34.4
    replaces = [f"{m} => {m} {staged_v}" for m in staging]
    b.write_module(
        requires=[f"k8s.io/kubernetes {v}", f"go.etcd.io/etcd/server/v3 {b.pins['etcd']}"],
        replaces=replaces,
        imports=[
            "k8s.io/kubernetes/cmd/kube-apiserver",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
            "k8s.io/kubernetes/cmd/kube-scheduler",
            "go.etcd.io/etcd/server/v3",
        ],
    )
    b.progress(f"kubernetes {v}: resolving modules ({len(staging)} staging modules pinned to {staged_v})")
    b.run(["go", "mod", "tidy"])
    major, minor = v.lstrip("v").split(".")[:2]
    date = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={v}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate={date}",
        ]
    for exe in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        b.progress(f"kubernetes {v}: go build {exe} (the first build takes several minutes)")
        b.go_build(b.stage / "bin" / exe, f"k8s.io/kubernetes/cmd/{exe}", tags="selinux,notest", ldflags=" ".join(flags))
    b.progress(f"kubernetes {v}: go build etcd {b.pins['etcd']}")
    b.go_build(b.stage / "bin" / "etcd", "go.etcd.io/etcd/server/v3")


def _build_kwok(b: _Build) -> None:
    v = b.version
    b.write_module(requires=[f"sigs.k8s.io/kwok {v}"], replaces=[], imports=["sigs.k8s.io/kwok/cmd/kwok"])
    b.progress(f"kwok {v}: resolving modules")
    b.run(["go", "mod", "tidy"])
    b.progress(f"kwok {v}: go build kwok")
    b.go_build(
        b.stage / "bin" / "kwok", "sigs.k8s.io/kwok/cmd/kwok", ldflags=f"-X sigs.k8s.io/kwok/pkg/consts.Version={v.lstrip('v')}"
    )
    # The stage definitions make fake nodes Ready and fake pods Running; kwok refuses to
    # start without them. They ship in the module, not in the binary.
    mod = Path(b.module_info(f"sigs.k8s.io/kwok@{v}")["Dir"])
    docs = _kwok_stage_docs(mod / "kustomize" / "stage")
    (b.stage / "stages.yaml").write_text("\n---\n".join(d.removeprefix("---").strip() for d in docs) + "\n", encoding="utf-8")


def _kwok_stage_docs(stage_dir: Path) -> list[str]:
    """The Stage documents kwok's own kustomizations list for fast nodes with leases and general pods."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    _Dumper.add_representer(str, _str)
    docs: list[str] = []
    for sub in ("node/fast", "node/heartbeat-with-lease", "pod/general"):
        kust = yaml.safe_load((stage_dir / sub / "kustomization.yaml").read_text(encoding="utf-8"))
        for res in kust["resources"]:
            stage = yaml.safe_load((stage_dir / sub / res).read_text(encoding="utf-8"))
            # The upstream stages add seconds of random delay to mimic real kubelets; a
            # rebuild drill wants the API's behaviour, not simulated image pulls.
            stage["spec"].pop("delay", None)
            docs.append(yaml.dump(stage, Dumper=_Dumper, sort_keys=False).strip())
    return docs


def _build_pulumi(b: _Build) -> None:
    v = b.version
    info = b.module_info(f"github.com/pulumi/pulumi/pkg/v3@{v}")
    b.write_module(
        requires=[f"github.com/pulumi/pulumi/pkg/v3 {v}", f"github.com/pulumi/pulumi/sdk/v3 {v}"],
        replaces=_replace_lines(Path(info["GoMod"])),
        imports=["github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"],
    )
    b.progress(f"pulumi {v}: resolving modules")
    b.run(["go", "mod", "tidy"])
    b.progress(f"pulumi {v}: go build pulumi (the first build takes several minutes)")
    b.go_build(
        b.stage / "bin" / "pulumi",
        "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi",
        tags="osusergo",
        ldflags=f"-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version={v}",
    )


def _build_langhost(b: _Build) -> None:
    v = b.version
    main_go = resources.files("rebuild.toolchain").joinpath("langhost", "main.go").read_text(encoding="utf-8")
    (b.dir / "main.go").write_text(main_go, encoding="utf-8")
    body = f"module rebuild.local/build/langhost\n\ngo 1.24\n\nrequire github.com/pulumi/pulumi/sdk/v3 {v}\n"
    (b.dir / "go.mod").write_text(body, encoding="utf-8")
    (b.dir / "tools.go").unlink(missing_ok=True)
    b.progress(f"pulumi-language-python {v}: resolving modules")
    b.run(["go", "mod", "tidy"])
    b.progress(f"pulumi-language-python {v}: go build")
    b.go_build(b.stage / "bin" / "pulumi-language-python", ".", ldflags=f"-X main.version={v}")
    sdk = Path(b.module_info(f"github.com/pulumi/pulumi/sdk/v3@{v}")["Dir"])
    # The exec shim runs the user's program; the dynamic-provider plugin runs Python dynamic
    # providers (stacks/cluster uses one). Both are scripts shipped in the sdk module.
    for src, name in (
        (sdk / "python" / "cmd" / "pulumi-language-python-exec", "pulumi-language-python-exec"),
        (sdk / "python" / "dist" / "pulumi-resource-pulumi-python", "pulumi-resource-pulumi-python"),
    ):
        exe = b.stage / "bin" / name
        shutil.copyfile(src, exe)
        exe.chmod(0o755)


def _build_k8s_provider(b: _Build) -> None:
    v = b.version
    mv = b.pins["module_version"]
    mod = "github.com/pulumi/pulumi-kubernetes/provider/v4"
    info = b.module_info(f"{mod}@{mv}")
    src = Path(info["Dir"]) / "cmd" / "pulumi-resource-kubernetes"
    # main.go embeds files that generate.go derives from the committed schema; the module zip
    # has the inputs but not the outputs, so generate them in the wrapper.
    for f in ("main.go", "generate.go", "schema.json", "terraform-mapping.json"):
        dst = b.dir / f
        dst.write_bytes((src / f).read_bytes())
        dst.chmod(0o644)
    b.write_module(
        requires=[f"{mod} {mv}", f"github.com/pulumi/pulumi-kubernetes/sdk/v4 v{v}"],
        replaces=_replace_lines(Path(info["GoMod"])),
        imports=[],
    )
    (b.dir / "tools.go").unlink(missing_ok=True)
    b.progress(f"pulumi-resource-kubernetes {v}: resolving modules")
    b.run(["go", "mod", "tidy"])
    b.progress(f"pulumi-resource-kubernetes {v}: generating embedded schema")
    b.run(["go", "run", "./generate.go"], env=b.goenv(VERSION=v))
    b.progress(f"pulumi-resource-kubernetes {v}: go build (the first build takes several minutes)")
    b.go_build(
        b.stage / "bin" / "pulumi-resource-kubernetes",
        ".",
        ldflags=f"-X {mod}/pkg/version.Version={v}",
    )


def _copy_tree(src: Path, dst: Path) -> None:
    """Copy a folder out of the (read-only) Go module cache as ordinary writable files."""
    shutil.copytree(src, dst, copy_function=shutil.copyfile, dirs_exist_ok=True)
    for d, _, files in os.walk(dst):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)


def _build_flux_controller(b: _Build) -> None:
    """source-controller or kustomize-controller: main package at the module root.

    Their go.mod replaces ``<module>/api => ./api``; the wrapper requires the api module's tag
    of the same version instead and keeps the other (non-local) replaces. The CRDs they
    reconcile ship next to the binary, so a local cluster can install exactly this version's.
    """
    v = b.version
    mod = f"github.com/fluxcd/{b.name}"
    info = b.module_info(f"{mod}@{v}")
    b.write_module(
        requires=[f"{mod} {v}", f"{mod}/api {b.pins.get('api_version', v)}"],
        replaces=_replace_lines(Path(info["GoMod"])) + _pinned_replaces(b),
        imports=[mod],
    )
    b.progress(f"{b.name} {v}: resolving modules")
    # -e: the proxy here does not serve some modules only the controllers' *tests* import
    # (fluxcd/pkg/helmtestserver); tidy would fail on them although the build never needs
    # them. A module the build does need still fails loudly at `go build`.
    b.run(["go", "mod", "tidy", "-e"])
    b.progress(f"{b.name} {v}: go build (the first build takes several minutes)")
    b.go_build(b.stage / "bin" / b.name, mod)
    crds = b.stage / "crds"
    crds.mkdir()
    for src in sorted((Path(info["Dir"]) / "config" / "crd" / "bases").glob("*.yaml")):
        shutil.copyfile(src, crds / src.name)
        (crds / src.name).chmod(0o644)
    # The kustomize bases of the in-cluster install (CRDs, RBAC, Deployment, Service) of this
    # exact version, for clusters whose nodes really run Pods (kind, an existing cluster).
    for sub in ("crd", "rbac", "manager", "default"):
        if (Path(info["Dir"]) / "config" / sub).is_dir():
            _copy_tree(Path(info["Dir"]) / "config" / sub, b.stage / "config" / sub)


def _pinned_replaces(b: _Build) -> list[str]:
    """Extra ``replace`` lines from versions.toml (``replace = "a => a v; b => b v"``): for a
    dependency version the module proxy does not serve, the nearest one it does."""
    return [r.strip() for r in b.pins.get("replace", "").split(";") if r.strip()]


GITEA_TAGS = "sqlite,sqlite_unlock_notify"


def _build_gitea(b: _Build) -> None:
    """Gitea with SQLite (mattn/go-sqlite3 in 1.26, hence cgo) and without ``bindata``.

    Without ``bindata`` Gitea reads templates/, options/ and public/ from STATIC_ROOT_PATH;
    they are copied into the tool folder so it does not depend on the Go module cache.
    """
    v = b.version
    info = b.module_info(f"code.gitea.io/gitea@{v}")
    b.write_module(
        requires=[f"code.gitea.io/gitea {v}"],
        replaces=_replace_lines(Path(info["GoMod"])),
        imports=["code.gitea.io/gitea"],
    )
    b.progress(f"gitea {v}: resolving modules")
    b.run(["go", "mod", "tidy"])
    b.progress(f"gitea {v}: go build with {GITEA_TAGS} (cgo SQLite; the first build takes several minutes)")
    ldflags = f"-s -w -X main.Version={v.lstrip('v')} -X main.Tags={GITEA_TAGS}"
    argv = ["go", "build", "-trimpath", "-o", str(b.stage / "bin" / "gitea"), "-tags", GITEA_TAGS]
    b.run([*argv, "-ldflags", ldflags, "code.gitea.io/gitea"], env=b.goenv(CGO_ENABLED="1"))
    for sub in ("templates", "options", "public"):
        _copy_tree(Path(info["Dir"]) / sub, b.stage / "static" / sub)


def _fetch_argocd_manifests(b: _Build) -> None:
    """Argo CD cannot be built here (its gitops-engine module does not resolve), but its
    install manifests ship in the module zip, which the proxy serves: take them from there."""
    v = b.version
    mod = f"github.com/argoproj/argo-cd/v3@{v}"
    b.write_module(requires=[], replaces=[], imports=[])
    (b.dir / "tools.go").unlink(missing_ok=True)
    # `go mod download` extracts the zip even when it then complains that the module needs a
    # newer Go (argo-cd 3.6 says go 1.27); only the files matter here.
    proc = subprocess.run(
        ["go", "mod", "download", "-json", mod], cwd=b.dir, env=b.goenv(), capture_output=True, text=True, check=False
    )
    try:
        info = json.loads(proc.stdout[proc.stdout.index("{") :])
    except ValueError as exc:
        raise ToolchainError(f"go mod download {mod} failed: {proc.stderr.strip()[-300:]}", fix=_PROXY_FIX) from exc
    gomodcache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True).stdout.strip()
    mod_dir = Path(str(info.get("Dir") or Path(gomodcache) / f"github.com/argoproj/argo-cd/v3@{v}"))
    src = mod_dir / "manifests" / "install.yaml"
    if not src.is_file():
        raise ToolchainError(f"{mod} has no manifests/install.yaml ({info.get('Error', '')})", fix=_PROXY_FIX)
    shutil.copyfile(src, b.stage / "install.yaml")
    (b.stage / "install.yaml").chmod(0o644)


def _go_module_recipe(
    module: str, packages: tuple[str, ...], ldflags: Callable[[str], str] = lambda _v: ""
) -> Callable[[_Build], None]:
    """A recipe for a plain Go module: require it at the pinned version in a wrapper module,
    copy its non-local replaces (plus versions.toml's ``replace``), tidy, and build each main
    package into ``bin/<last path element>``. ``ldflags(version)`` adds -X version flags."""

    def build(b: _Build) -> None:
        v = b.version
        info = b.module_info(f"{module}@{v}")
        b.write_module(
            requires=[f"{module} {v}"],
            replaces=_replace_lines(Path(info["GoMod"])) + _pinned_replaces(b),
            imports=list(packages),
        )
        b.progress(f"{b.name} {v}: resolving modules")
        b.run(["go", "mod", "tidy"])
        for pkg in packages:
            exe = pkg.rsplit("/", 1)[-1]
            b.progress(f"{b.name} {v}: go build {exe}")
            b.go_build(b.stage / "bin" / exe, pkg, ldflags=ldflags(v))

    return build


# sops's version is a plain variable in its source ("3.13.3"); nothing to set. pulumi-yaml's
# releases set the tag (what `GetPluginInfo` reports to the engine). SeaweedFS prints its own
# release number plus COMMIT: the pseudo-version's commit, so `weed version` names the source.
_build_sops = _go_module_recipe("github.com/getsops/sops/v3", ("github.com/getsops/sops/v3/cmd/sops",))
_build_age = _go_module_recipe("filippo.io/age", ("filippo.io/age/cmd/age", "filippo.io/age/cmd/age-keygen"))
_build_pulumi_yaml = _go_module_recipe(
    "github.com/pulumi/pulumi-yaml",
    ("github.com/pulumi/pulumi-yaml/cmd/pulumi-language-yaml",),
    lambda v: f"-X github.com/pulumi/pulumi-yaml/pkg/version.Version={v}",
)
_build_seaweedfs = _go_module_recipe(
    "github.com/seaweedfs/seaweedfs",
    ("github.com/seaweedfs/seaweedfs/weed",),
    lambda v: f"-X github.com/seaweedfs/seaweedfs/weed/util/version.COMMIT={v.rsplit('-', 1)[-1]}",
)


def _split_names(values: Sequence[str]) -> list[str]:
    """``("a,b", "c")`` -> ``["a", "b", "c"]``: options may be repeated or comma-separated."""
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


@dataclass(frozen=True)
class Recipe:
    name: str
    binaries: tuple[str, ...]
    build: Callable[[_Build], None]
    note: str = ""
    # Programs the pulumi engine loads as bundled plugins: linked next to the pulumi binary
    # (see _bundle_language_host) so `pulumi` finds them without PATH or a plugin install.
    pulumi_plugins: tuple[str, ...] = ()


RECIPES: tuple[Recipe, ...] = (
    Recipe("kubernetes", ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"), _build_kubernetes),
    Recipe("kwok", ("kwok",), _build_kwok),
    Recipe("pulumi", ("pulumi",), _build_pulumi),
    Recipe(
        "pulumi-language-python",
        ("pulumi-language-python", "pulumi-language-python-exec", "pulumi-resource-pulumi-python"),
        _build_langhost,
        pulumi_plugins=("pulumi-language-python", "pulumi-language-python-exec", "pulumi-resource-pulumi-python"),
    ),
    Recipe("pulumi-resource-kubernetes", ("pulumi-resource-kubernetes",), _build_k8s_provider),
    Recipe("source-controller", ("source-controller",), _build_flux_controller),
    Recipe("kustomize-controller", ("kustomize-controller",), _build_flux_controller),
    Recipe("gitea", ("gitea",), _build_gitea),
    Recipe(
        "argocd-manifests",
        (),
        _fetch_argocd_manifests,
        note="manifests only: Argo CD's controller cannot be built here, the argocd path is verified at the API level",
    ),
    # Optional tools (``optional = true`` in versions.toml): built only when asked for.
    Recipe("sops", ("sops",), _build_sops),
    Recipe("age", ("age", "age-keygen"), _build_age),
    # Same recipe as source/kustomize-controller: ./api replace dropped, CRDs and config/ shipped.
    Recipe("helm-controller", ("helm-controller",), _build_flux_controller),
    Recipe(
        "pulumi-language-yaml",
        ("pulumi-language-yaml",),
        _build_pulumi_yaml,
        note="Pulumi YAML programs (`runtime: yaml`); linked next to the pulumi binary",
        pulumi_plugins=("pulumi-language-yaml",),
    ),
    Recipe(
        "seaweedfs",
        ("weed",),
        _build_seaweedfs,
        note="S3-compatible store for a real Pulumi backend on 127.0.0.1 (docs/toolchain.md)",
    ),
)


@contextlib.contextmanager
def _install_lock(root: Path, progress: Progress) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    lock_path = root / ".install.lock"
    with lock_path.open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"another install holds {lock_path}; waiting for it")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def check_prerequisites(root: Path) -> None:
    """Fail fast, with the fix, on what would otherwise fail half-way through a long build."""
    if shutil.which("go") is None:
        raise ToolchainError("the Go toolchain (`go`) is not on PATH", fix="install Go >= 1.24 and put it on PATH")
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-probe"
        probe.write_text("ok", encoding="utf-8")
        probe.unlink()
    except OSError as exc:
        raise ToolchainError(
            f"the toolchain cache {root} is not writable ({exc.strerror})",
            fix="set REBUILD_CACHE to a writable folder",
        ) from exc
    free = shutil.disk_usage(root).free
    if free < MIN_FREE_BYTES:
        raise ToolchainError(
            f"only {free // 1024**2} MiB free under {root}; a cold toolchain build needs {MIN_FREE_BYTES // 1024**3} GiB",
            fix="free disk space or set REBUILD_CACHE to a larger disk",
        )


def install(tc: Toolchain | None = None, progress: Progress = _default_progress, only: list[str] | None = None) -> list[str]:
    """Build every missing pinned tool; returns the names built (empty when all were cached).

    ``only=None`` builds the core tools (optional ones are skipped); otherwise exactly the
    named ones (see ``Toolchain.select`` for ``--only`` / ``--with``)."""
    tc = tc or Toolchain()
    if only is None:
        only = tc.core_tools()
    todo = [r for r in RECIPES if r.name in only and not tc.installed(r.name)]
    plugin = tc.plugin_dir().joinpath("pulumi-resource-kubernetes")
    need_plugin = "pulumi-resource-kubernetes" in only and not plugin.exists()
    if not todo and not need_plugin:
        _bundle_language_host(tc)
        return []
    check_prerequisites(tc.root)
    built: list[str] = []
    with _install_lock(tc.root, progress):
        for recipe in todo:
            if tc.installed(recipe.name):  # another process finished it while we waited
                continue
            _run_recipe(tc, recipe, progress)
            built.append(recipe.name)
        # Checked again under the lock: an install we waited for may have added the plugin.
        if need_plugin and not plugin.exists():
            _install_plugin(tc, progress)
        _bundle_language_host(tc)
    return built


def _bundle_language_host(tc: Toolchain) -> None:
    """Link the language hosts (Python; YAML when installed) next to the pulumi binary, where
    the engine looks for bundled plugins first (else it warns "using pulumi-language-python
    from $PATH" on every run, and a YAML program would need the host on PATH)."""
    if not tc.installed("pulumi"):
        return
    for recipe in RECIPES:
        if not recipe.pulumi_plugins or not tc.installed(recipe.name):
            continue
        for exe in recipe.pulumi_plugins:
            link = tc.bin_dir("pulumi") / exe
            target = tc.bin_dir(recipe.name) / exe
            if link.is_symlink() and link.resolve() == target.resolve():
                continue
            link.unlink(missing_ok=True)
            link.symlink_to(target)


def _run_recipe(tc: Toolchain, recipe: Recipe, progress: Progress) -> None:
    b = _Build(tc, recipe.name, progress)
    b.dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(b.stage, ignore_errors=True)
    (b.stage / "bin").mkdir(parents=True)
    started = _dt.datetime.now()
    progress(f"building {recipe.name} {b.version} (log: {b.log})")
    recipe.build(b)
    final = tc.tool_dir(recipe.name)
    shutil.rmtree(final, ignore_errors=True)
    b.stage.rename(final)  # atomic: a tool dir exists only once it is whole
    took = (_dt.datetime.now() - started).total_seconds()
    (final / STAMP).write_text(json.dumps({"version": b.version, "seconds": round(took, 1)}) + "\n", encoding="utf-8")
    progress(f"built {recipe.name} {b.version} in {took:.0f}s")


def _install_plugin(tc: Toolchain, progress: Progress) -> None:
    v = tc.versions["pulumi-resource-kubernetes"]["version"]
    binary = tc.binary("pulumi-resource-kubernetes")
    pulumi = tc.binary("pulumi")
    progress(f"installing plugin resource kubernetes {v} into {tc.pulumi_home}")
    proc = subprocess.run(
        [str(pulumi), "plugin", "install", "resource", "kubernetes", v, "--file", str(binary), "--non-interactive"],
        env=tc.env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ToolchainError(
            f"`pulumi plugin install resource kubernetes {v}` failed: {proc.stderr.strip()[-500:]}",
            fix="run `rebuild toolchain doctor` and reinstall the provider",
        )
