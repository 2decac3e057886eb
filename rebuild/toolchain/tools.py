"""The pinned external programs rebuild drives: which an install builds, building them, their state.

Why this exists: the machines rebuild is developed and tested on reach the Go module proxy
but no GitHub release download, so kube-apiserver, etcd, kwok, the Pulumi engine, its Python
language host and the Kubernetes provider are built here from their Go modules (S3Proxy, a
Java jar, is downloaded from Maven Central and needs Java >= 17: :func:`check_java`)
(:mod:`rebuild.toolchain.recipes`) into ``$REBUILD_CACHE/tools/<name>/<version>/``
(:mod:`rebuild.toolchain.registry`); a finished tool is marked by a stamp file and never
rebuilt, so a warm ``install`` is a few stat calls. ``doctor`` reads :meth:`Toolchain.status`.

Versions come from ``rebuild/versions.toml`` only. One file lock serialises installs so two
runs (a developer's and CI's, or two pytest workers) never build into the same folder.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as _dt
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rebuild.core.errors import ConfigError, ToolchainError
from rebuild.core.progress import Progress
from rebuild.toolchain.recipes import BUILDS, RECIPES, Build, Recipe
from rebuild.toolchain.registry import STAMP, ToolPaths

# Disk a cold build needs: Go's module and build caches plus the binaries (measured ~9 GB).
MIN_FREE_BYTES = 6 * 1024**3

# S3Proxy 4.x is compiled for Java 17 (class file 61); an older JVM fails with UnsupportedClassVersionError.
JAVA_MIN = 17
JAVA_FIX = (
    f"install Java >= {JAVA_MIN} (Debian/Ubuntu: `apt-get install openjdk-17-jre-headless`) "
    "and put `java` on PATH or set JAVA_HOME"
)


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


@dataclass(frozen=True)
class Java:
    """The JVM that runs S3Proxy: ``$JAVA_HOME/bin/java``, else ``java`` on PATH."""

    path: Path | None
    version: str  # as `java -version` prints it ("17.0.15"); "" when unknown
    problem: str  # "" when usable

    @property
    def ok(self) -> bool:
        return self.path is not None and not self.problem


def find_java() -> Java:
    """Locate Java and read its version (one `java -version`, ~0.1 s); never raises."""
    home = os.environ.get("JAVA_HOME")
    found = Path(home) / "bin" / "java" if home and (Path(home) / "bin" / "java").exists() else None
    if found is None:
        which = shutil.which("java")
        found = Path(which) if which else None
    if found is None:
        return Java(None, "", "no `java` on PATH (and JAVA_HOME unset or without bin/java)")
    try:
        # -XX:-UsePerfData: not even `java -version` may write /tmp/hsperfdata_<user>/<pid>
        argv = [str(found), "-XX:-UsePerfData", "-version"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Java(found, "", f"`{found} -version` failed: {exc}")
    m = re.search(r'version "([^"]+)"', out.stderr + out.stdout)
    if not m:
        return Java(found, "", f"`{found} -version` printed no version: {(out.stderr + out.stdout).strip()[-200:]}")
    version = m.group(1)
    lead = re.match(r"(?:1\.)?(\d+)", version)  # "1.8.0_392" is Java 8, "17.0.15" Java 17
    major = int(lead.group(1)) if lead else 0
    if major < JAVA_MIN:
        return Java(found, version, f"{found} is Java {version}; S3Proxy needs Java >= {JAVA_MIN}")
    return Java(found, version, "")


def check_java() -> Path:
    """The java executable S3Proxy runs on, or ToolchainError naming what is wrong and the fix."""
    java = find_java()
    if not java.ok or java.path is None:
        raise ToolchainError(f"s3proxy (the tests' S3 backend) needs Java: {java.problem}", fix=JAVA_FIX)
    return java.path


@dataclass
class Toolchain(ToolPaths):
    """The pinned tools: their paths (:class:`ToolPaths`), which of them an install builds, and their state."""

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
            if spec.name == "s3proxy":  # a prerequisite, not something install provides
                java = find_java()
                detail = "runs s3proxy" if java.ok else f"runs s3proxy: {java.problem}; fix: {JAVA_FIX}"
                out.append(ToolStatus("java", java.version or "-", java.path or Path("java"), java.ok, detail, opt, spec.name))
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


def _default_progress(msg: str) -> None:
    print(f"[toolchain] {msg}", file=sys.stderr, flush=True)


def _split_names(values: Sequence[str]) -> list[str]:
    """``("a,b", "c")`` -> ``["a", "b", "c"]``: options may be repeated or comma-separated."""
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


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
    if any(r.name == "s3proxy" for r in todo):
        check_java()  # the jar downloads without it, but nothing could run it
    with _install_lock(tc.root, progress):
        # Checked again under the lock: another process may have finished some while we waited.
        built = _run_recipes(tc, [r for r in todo if not tc.installed(r.name)], progress)
        # Checked again under the lock: an install we waited for may have added the plugin.
        if need_plugin and not plugin.exists():
            _install_plugin(tc, progress)
        _bundle_language_host(tc)
    return built


# Cold builds, longest first: two run at once, and starting the long ones first keeps the last
# minutes from being one build alone. Seconds of the idle cold `make toolchain` of 2026-12-02
# (two at a time, docs/toolchain.md): pulumi-resource-kubernetes 1,200, kubernetes 769, gitea
# about 600, pulumi 461, source-controller 445, helm-controller 437, kustomize-controller 304,
# sops 210 to 286, kwok 173, pulumi-language-yaml 106 (the rest under a minute). For the demo's
# set this order's schedule is about a minute shorter than the one before it.
_LONGEST_FIRST = (
    "pulumi-resource-kubernetes",
    "kubernetes",
    "gitea",
    "pulumi",
    "source-controller",
    "helm-controller",
    "kustomize-controller",
    "sops",
    "kwok",
    "pulumi-language-yaml",
)


def build_jobs() -> int:
    """How many tools build at once: ``REBUILD_BUILD_JOBS``, else 2.

    Two, not one: a cold build spends a large share of its time downloading modules (``go mod
    tidy``) and linking (one core), so a second build fills the cores the first leaves idle;
    more than two only adds memory (a big link takes 2-3 GB)."""
    raw = os.environ.get("REBUILD_BUILD_JOBS", "2")
    try:
        jobs = int(raw)
    except ValueError:
        raise ConfigError(f"REBUILD_BUILD_JOBS={raw!r} is not a whole number", fix="set it to 1 or more, or unset it") from None
    if jobs < 1:
        raise ConfigError(f"REBUILD_BUILD_JOBS={raw!r} must be at least 1", fix="set it to 1 or more, or unset it")
    return jobs


def build_order(recipes: Sequence[Recipe]) -> list[Recipe]:
    """The recipes longest cold build first (unknown ones last, in RECIPES order)."""
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    return sorted(recipes, key=lambda r: rank.get(r.name, len(rank)))


def _run_recipes(tc: Toolchain, todo: Sequence[Recipe], progress: Progress) -> list[str]:
    """Build ``todo``, ``build_jobs()`` at a time; returns the names built, in install order.

    A failure stops new builds from starting, lets the running ones finish (their work is kept
    in the cache) and is raised once they have; the first failure is the one raised."""
    ordered = build_order(todo)
    jobs = min(build_jobs(), len(ordered)) or 1
    BUILDS.reset()
    if jobs == 1:
        for recipe in ordered:
            _run_recipe(tc, recipe, progress)
        return [r.name for r in ordered]
    done: list[str] = []
    errors: list[BaseException] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="toolchain-build") as pool:
        pending = {pool.submit(_run_recipe, tc, r, progress): r for r in ordered}
        try:
            for fut in concurrent.futures.as_completed(pending):
                if fut.cancelled():
                    continue
                exc = fut.exception()
                if exc is None:
                    done.append(pending[fut].name)
                    continue
                if not errors:
                    for other in pending:
                        other.cancel()  # those not started yet
                errors.append(exc)
        except BaseException:
            # Ctrl-C or SIGTERM (the CLI raises KeyboardInterrupt for both): nothing new starts,
            # the running builds are killed, and leaving the pool no longer waits for them.
            for other in pending:
                other.cancel()
            BUILDS.stop()
            raise
    if errors:
        raise errors[0]
    return [r.name for r in ordered if r.name in done]


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
    b = Build(tc, recipe.name, progress)
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
