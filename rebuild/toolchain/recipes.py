"""How each pinned tool is built from its Go module: the wrapper-module build and one recipe per tool.

Why this exists: the machines rebuild runs on reach the Go module proxy (and Maven Central) but
no GitHub release download, so kube-apiserver, etcd, kwok, the Pulumi engine and plugins, Flux's
controllers, Gitea ... are built here; S3Proxy, a Java jar, is downloaded (:func:`download`,
sha256-pinned). Each build goes through a small generated *wrapper module* (``go install pkg@v``
refuses modules with ``replace`` directives) into a staging folder that :mod:`.tools` renames into
place once whole. :data:`RECIPES` lists them in install order.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from rebuild.core.errors import ToolchainError
from rebuild.core.procgroup import stop_groups
from rebuild.core.progress import Progress
from rebuild.toolchain.registry import ToolPaths


class RunningBuilds:
    """The build commands running now, so that an interrupted install can stop all of them.

    Ctrl-C or SIGTERM reaches only rebuild's main thread, while two builds run in worker
    threads, each in a process group of its own: :meth:`stop` kills those groups (SIGTERM, then
    SIGKILL after ``grace`` seconds) and makes every later :meth:`check` raise, so no build
    starts or goes on to its next command after an interruption."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[str]] = set()
        self._stopped = False

    def reset(self) -> None:
        with self._lock:
            self._stopped = False

    def check(self, name: str) -> None:
        if self._stopped:
            raise ToolchainError(f"building {name} was stopped: the install was interrupted", fix="rerun the install")

    @contextlib.contextmanager
    def running(self, proc: subprocess.Popen[str]) -> Iterator[None]:
        with self._lock:
            self._procs.add(proc)
        try:
            yield
        except BaseException:  # Ctrl-C while the main thread itself waits (one build at a time)
            self.stop()
            raise
        finally:
            with self._lock:
                self._procs.discard(proc)

    def stop(self, grace: float = 5.0) -> None:
        with self._lock:
            self._stopped = True
            procs = list(self._procs)
        stop_groups([p.pid for p in procs if p.poll() is None], reap=procs, grace=grace)


BUILDS = RunningBuilds()


@dataclass
class Build:
    """One wrapper-module build: a folder, a log and the go environment."""

    tc: ToolPaths
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
            # -dwarf=false: the linker's -w drops DWARF anyway, so the compiler need not make it
            # (about 10% less CPU in a cold build, docs/toolchain.md). In GOFLAGS, not in
            # go_build's argv, so `go run` shares the compiled packages with `go build`.
            GOFLAGS="-mod=mod -gcflags=all=-dwarf=false",
            # The compiler's collector runs a quarter as often: client-go's clientset from an empty
            # build cache took 86 s and 142 s CPU at GOGC=100, 64 s and 100 s at 400 (no better at
            # 800), for 0.6 GB instead of 0.4 GB per compile (docs/toolchain.md). A GOGC of the
            # caller's own wins (a machine short of memory).
            GOGC=os.environ.get("GOGC", "400"),
            # The machine's own Go, unless versions.toml names a newer one for this tool only
            # (``gotoolchain = "go1.27.3"``: the go command fetches it from the module proxy).
            GOTOOLCHAIN=self.pins.get("gotoolchain", "local"),
            GOWORK="off",
        )
        env.update(extra)
        return env

    def run(self, argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
        """Run one build command, appending its output to the log; raise with the log's tail.

        The command runs in a process group of its own, registered with :data:`BUILDS`, so an
        interrupted install stops it and everything it started (``go`` runs the compiler and
        linker as children) instead of leaving them building."""
        cwd = cwd or self.dir
        BUILDS.check(self.name)
        t0 = time.monotonic()
        with self.log.open("a", encoding="utf-8") as log:
            log.write(f"\n$ {' '.join(argv)}\n")
            log.flush()
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env or self.goenv(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            with BUILDS.running(proc):
                stdout, _ = proc.communicate()
            log.write(stdout)
            log.write(f"# exit {proc.returncode} after {time.monotonic() - t0:.1f} s\n")
        BUILDS.check(self.name)
        if proc.returncode != 0:
            tail = "\n".join(stdout.strip().splitlines()[-15:])
            hint = _classify_go_failure(stdout)
            raise ToolchainError(
                f"building {self.name} {self.version} failed at `{' '.join(argv[:3])}`:\n{tail}",
                fix=hint or f"read {self.log}",
            )
        return stdout

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

    def go_build(self, out: Path, *pkgs: str, tags: str = "", ldflags: str = "") -> None:
        """``go build`` of one main package into the file ``out``, or of several into the
        existing folder ``out`` (each binary named after its package's last element)."""
        target = f"{out}/" if len(pkgs) > 1 else str(out)
        argv = ["go", "build", "-trimpath", "-o", target]
        if tags:
            argv += ["-tags", tags]
        argv += ["-ldflags", f"-s -w {ldflags}".strip(), *pkgs]
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


def _build_kubernetes(b: Build) -> None:
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
    exes = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
    b.progress(f"kubernetes {v}: go build {', '.join(exes)} (the first build takes several minutes)")
    # One `go build` for the three: each package is compiled once, and one binary links while
    # the next one's packages compile (three builds in a row link one after the other).
    (b.stage / "bin").mkdir(parents=True, exist_ok=True)
    b.go_build(
        b.stage / "bin",
        *(f"k8s.io/kubernetes/cmd/{exe}" for exe in exes),
        tags="selinux,notest",
        ldflags=" ".join(flags),
    )
    b.progress(f"kubernetes {v}: go build etcd {b.pins['etcd']}")
    b.go_build(b.stage / "bin" / "etcd", "go.etcd.io/etcd/server/v3")


def _build_kwok(b: Build) -> None:
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


def _build_pulumi(b: Build) -> None:
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


def _build_langhost(b: Build) -> None:
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


def _build_k8s_provider(b: Build) -> None:
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


def _build_flux_controller(b: Build) -> None:
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


def _pinned_replaces(b: Build) -> list[str]:
    """Extra ``replace`` lines from versions.toml (``replace = "a => a v; b => b v"``): for a
    dependency version the module proxy does not serve, the nearest one it does."""
    return [r.strip() for r in b.pins.get("replace", "").split(";") if r.strip()]


GITEA_TAGS = "sqlite,sqlite_unlock_notify"


def _build_gitea(b: Build) -> None:
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


def _fetch_argocd_manifests(b: Build) -> None:
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
) -> Callable[[Build], None]:
    """A recipe for a plain Go module: require it at the pinned version in a wrapper module,
    copy its non-local replaces (plus versions.toml's ``replace``), tidy, and build each main
    package into ``bin/<last path element>``. ``ldflags(version)`` adds -X version flags."""

    def build(b: Build) -> None:
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
# releases set the tag (what `GetPluginInfo` reports to the engine).
_build_sops = _go_module_recipe("github.com/getsops/sops/v3", ("github.com/getsops/sops/v3/cmd/sops",))
_build_age = _go_module_recipe("filippo.io/age", ("filippo.io/age/cmd/age", "filippo.io/age/cmd/age-keygen"))
_build_pulumi_yaml = _go_module_recipe(
    "github.com/pulumi/pulumi-yaml",
    ("github.com/pulumi/pulumi-yaml/cmd/pulumi-language-yaml",),
    lambda v: f"-X github.com/pulumi/pulumi-yaml/pkg/version.Version={v}",
)


MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
S3PROXY_JAR = "s3proxy.jar"
_DOWNLOAD_ATTEMPTS = 3


def maven_url(group: str, artifact: str, version: str, classifier: str = "") -> str:
    """A jar's URL in a Maven repository layout: Central, or the mirror named by
    ``REBUILD_MAVEN_REPO`` (an Artifactory/Nexus proxy of Central; the pinned sha256 still applies)."""
    base = os.environ.get("REBUILD_MAVEN_REPO", MAVEN_CENTRAL).rstrip("/")
    name = f"{artifact}-{version}" + (f"-{classifier}" if classifier else "")
    return f"{base}/{group.replace('.', '/')}/{artifact}/{version}/{name}.jar"


def download(b: Build, url: str, dest: Path, sha256: str) -> None:
    """Fetch ``url`` into ``dest`` (streamed, hashed on the way), keep it only if its sha256 is
    the pinned one. Network errors and 5xx are retried (bounded, one log line per attempt); a
    4xx or a wrong digest is not: retrying cannot heal a bad pin or a missing version."""
    part = dest.with_name(dest.name + ".part")
    last = ""
    for attempt in range(1, _DOWNLOAD_ATTEMPTS + 1):
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, part.open("wb") as out:
                while chunk := resp.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            break
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                raise ToolchainError(
                    f"downloading {b.name} {b.version} from {url}: HTTP {exc.code}",
                    fix="check the version in rebuild/versions.toml and REBUILD_MAVEN_REPO (unset means Maven Central)",
                ) from exc
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        part.unlink(missing_ok=True)
        if attempt < _DOWNLOAD_ATTEMPTS:
            b.progress(
                f"{b.name} {b.version}: download attempt #{attempt}/{_DOWNLOAD_ATTEMPTS} failed; will retry: GET {url} -> {last}"
            )
            time.sleep(2 * attempt)
    else:
        raise ToolchainError(
            f"downloading {b.name} {b.version} from {url} failed {_DOWNLOAD_ATTEMPTS} times: {last}",
            fix="check that Maven Central (or the mirror in REBUILD_MAVEN_REPO) is reachable from this machine",
        )
    if digest.hexdigest() != sha256:
        part.unlink(missing_ok=True)
        raise ToolchainError(
            f"{b.name} {b.version} from {url} has sha256 {digest.hexdigest()}, rebuild/versions.toml pins {sha256}",
            fix="a mirror or proxy changed the file: fetch it from Maven Central, or re-pin only after checking its .sha1 there",
        )
    part.rename(dest)
    b.dir.mkdir(parents=True, exist_ok=True)
    with b.log.open("a", encoding="utf-8") as log:  # the log the install names, as for a build
        log.write(f"GET {url}\n-> {dest.name}: {dest.stat().st_size} bytes, sha256 {sha256} (pinned)\n")


def _fetch_s3proxy(b: Build) -> None:
    """S3Proxy is a Java program: nothing to build, one self-contained jar (Jetty, jclouds and
    their dependencies shaded in) from Maven Central, checked against the pinned sha256."""
    url = maven_url("org.gaul", "s3proxy", b.version, "jar-with-dependencies")
    b.progress(f"s3proxy {b.version}: downloading {url}")
    download(b, url, b.stage / "bin" / S3PROXY_JAR, b.pins["sha256"])
    (b.stage / "bin" / S3PROXY_JAR).chmod(0o644)


@dataclass(frozen=True)
class Recipe:
    name: str
    binaries: tuple[str, ...]
    build: Callable[[Build], None]
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
        "s3proxy",
        (S3PROXY_JAR,),
        _fetch_s3proxy,
        note="S3 server (a jar, run with Java >= 17) for a real Pulumi backend on 127.0.0.1 (docs/toolchain.md)",
    ),
)
