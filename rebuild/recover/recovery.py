"""The recovery itself: plan, up, verify, driven by rebuild.yaml.

``up`` is a sequence of timed phases, each idempotent so a rerun after a failure simply
continues:

    desired     fetch every source at its revision, render, validate (nothing touched yet)
    cluster     pulumi up stacks/cluster   (creates or restarts the cluster)
    platform    pulumi up stacks/platform  (namespaces, reconciler CRDs/config, git credentials, SOPS key)
    reconciler  start/await the reconciler, wait until it is Ready at the expected revision
    verify      every desired object present, as declared, and healthy

Broken desired state stops the run in the first phase with every problem and its
file:line (exit 2), before any cluster is created or changed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rebuild.adapters.fs import atomic_write
from rebuild.adapters.git import Checkout, Mirrors
from rebuild.adapters.kube import Kube
from rebuild.adapters.pulumi import STACKS_DIR, Pulumi
from rebuild.core.config import Config, SourceSpec
from rebuild.core.errors import ConfigError, Interrupted, RebuildError
from rebuild.core.model import DesiredObject, Phases, Source
from rebuild.core.progress import Progress
from rebuild.core.yamlload import LoadedDoc, YamlLoadError, load_all
from rebuild.desired import fluxtree
from rebuild.desired.cache import RenderCache, RenderKey
from rebuild.desired.fluxtree import Tree
from rebuild.desired.render import FluxLayer, KindInfo, Problem, Rendered, builtin_kinds, check_kinds, crd_kinds, fill_namespaces
from rebuild.reconcilers import flux, flux_install
from rebuild.recover.converge import VerifyReport, wait_converged
from rebuild.recover.ordering import apply_order, table
from rebuild.toolchain.tools import Toolchain


class DesiredStateError(ConfigError):
    """The revision in git cannot be rebuilt as it is; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(
            f"the desired state has {len(problems)} problem(s); nothing was applied:\n{lines}",
            fix="fix them in git (each line names the file and line), or rebuild an earlier revision with --revision",
        )
        self.problems = problems


@dataclass
class SourceState:
    spec: SourceSpec
    url: str  # the URL the reconciler pulls (local folders: rebuild's git server)
    checkout: Checkout
    objects: list[DesiredObject] = field(default_factory=list)
    tree: Tree | None = None  # the Flux Kustomizations followed from the source's path
    warnings: list[Problem] = field(default_factory=list)
    # Namespaced kinds of root objects that name no namespace: Flux is told to put them in
    # `default` (kustomize-controller itself refuses them: "namespace not specified").
    default_namespace_kinds: list[str] = field(default_factory=list)

    @property
    def replaced(self) -> list[tuple[DesiredObject, str]]:
        return self.tree.replaced if self.tree else []

    @property
    def flux_namespace(self) -> str:
        return self.tree.flux_namespace if self.tree else flux.NAMESPACE

    @property
    def flux_name(self) -> str:
        return self.tree.flux_name if self.tree else self.spec.name

    @property
    def flux_repo(self) -> str:
        return self.tree.flux_repo if self.tree else self.spec.name

    def describe(self) -> list[str]:
        """Plan lines: the source, the tree of Flux Kustomizations it applies, what rebuild replaces."""
        ns = f" namespace {self.spec.namespace}" if self.spec.namespace else ""
        lines = [
            f"  {self.spec.name}: {self.url} {self.spec.branch}@{self.checkout.sha[:12]} path {self.spec.path}{ns} "
            f"({len(self.objects)} objects)"
        ]
        nodes = self.tree.nodes if self.tree else []
        if len(nodes) > 1:
            lines.append(f"    Kustomization {self.flux_namespace}/{self.flux_name} (rebuild) applies {self.spec.path}")
            for n in nodes[1:]:
                depth = 3
                parent = n.parent
                while parent:
                    depth += 1
                    parent = next((m.parent for m in nodes if m.key == parent), "")
                after = f" after {', '.join(n.depends_on)}" if n.depends_on else ""
                what = f"{n.objects} objects from {n.path}" if n.followed else n.note
                target = f" into {n.target_namespace}" if n.target_namespace else ""
                lines.append(f"{'  ' * depth}Kustomization {n.key} ({n.source}): {what}{target}{after}")
        for o, why in self.replaced:
            lines.append(f"    replaced by rebuild: {o.ref} ({o.source}): {why}")
        lines += [f"    warning: {w}" for w in self.warnings]
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "url": self.url,
            "branch": self.spec.branch,
            "path": self.spec.path,
            "namespace": self.spec.namespace,
            "revision": self.checkout.sha,
            "committed_at": self.checkout.committed_at,
            "objects": len(self.objects),
            "flux": {"namespace": self.flux_namespace, "kustomization": self.flux_name, "git_repository": self.flux_repo},
            "kustomizations": self.tree.to_dict() if self.tree else [],
            "replaced": [{"object": str(o.ref), "source": str(o.source), "why": why} for o, why in self.replaced],
            "warnings": [str(w) for w in self.warnings],
        }


@dataclass
class DesiredState:
    sources: list[SourceState]

    @property
    def objects(self) -> list[DesiredObject]:
        return [o for s in self.sources for o in s.objects]

    @property
    def warnings(self) -> list[Problem]:
        return [w for s in self.sources for w in s.warnings]

    def inventory(self) -> list[dict[str, Any]]:
        counts: dict[tuple[str, str], int] = {}
        for o in self.objects:
            key = (o.ref.kind, o.ref.namespace or "(cluster)")
            counts[key] = counts.get(key, 0) + 1
        return [{"kind": k, "namespace": ns, "count": n} for (k, ns), n in sorted(counts.items())]


# --------------------------------------------------------------------------- context


@dataclass
class Context:
    config: Config
    root: Path
    toolchain: Toolchain = field(default_factory=Toolchain)
    progress: Progress = field(default=lambda _m: None)
    stacks_dir: Path = STACKS_DIR

    @property
    def pulumi(self) -> Pulumi:
        return Pulumi(root=self.root, toolchain=self.toolchain)

    @property
    def stack(self) -> str:
        return self.config.cluster.name

    def reconciler_kinds(self) -> dict[tuple[str, str], KindInfo]:
        """Kinds the reconciler's CRDs will define (so git may use them before the cluster has them)."""
        if self.config.reconciler.kind == "flux":
            return {
                ("source.toolkit.fluxcd.io", k): KindInfo(True, "flux")
                for k in ("GitRepository", "OCIRepository", "HelmRepository", "HelmChart", "Bucket", "ExternalArtifact")
            } | {("kustomize.toolkit.fluxcd.io", "Kustomization"): KindInfo(True, "flux")}
        return {("argoproj.io", k): KindInfo(True, "argocd") for k in ("Application", "AppProject", "ApplicationSet")}


# --------------------------------------------------------------------------- desired


def source_url(ctx: Context, spec: SourceSpec) -> str:
    """The URL the reconciler (and rebuild) fetch; a local folder is published by rebuild's git server."""
    if not spec.is_local():
        return spec.url
    from rebuild.adapters import gitserver

    folder = (ctx.config.base_dir / spec.url).resolve()
    if not folder.is_dir():
        raise ConfigError(f"source {spec.name}: local folder {folder} does not exist", fix="fix sources[].url in rebuild.yaml")
    server = gitserver.ensure_server(ctx.root / "gitserver")
    bare = server.repo_path(spec.name)
    gitserver.publish_dir(folder, bare, message=f"rebuild: snapshot of {folder}", branch=spec.branch)
    return server.repo_url(spec.name)


def load_desired(
    ctx: Context, revisions: dict[str, str] | None = None, known: dict[tuple[str, str], KindInfo] | None = None
) -> DesiredState:
    """Fetch and render every source; raise DesiredStateError with all problems found."""
    mirrors = Mirrors(ctx.root)
    renders = RenderCache(ctx.root / "cache" / "render")
    states: list[SourceState] = []
    problems: list[Problem] = []
    many = len(ctx.config.sources) > 1
    reconciler = ctx.config.reconciler.kind
    for spec in ctx.config.sources:
        url = source_url(ctx, spec)
        rev = (revisions or {}).get(spec.name) or spec.revision
        ctx.progress(f"desired: fetching {spec.name} ({spec.branch}{'@' + rev[:12] if rev else ''})")
        creds = spec.credentials.resolve(ctx.config.base_dir)
        co = mirrors.checkout(spec.name, url, spec.branch, rev, creds)
        label = spec.name if many else ""
        key = RenderKey(co.sha, spec.path, label, spec.namespace, reconciler)
        rendered = renders.render(key, co.path)
        problems.extend(rendered.problems)
        state = SourceState(spec, url, co, rendered.objects, warnings=list(rendered.warnings))
        if reconciler == "flux" and not rendered.problems:
            state.tree = _flux_tree(co, spec, label, rendered.objects, reconciler, renders)
            state.objects = state.tree.objects
            problems.extend(state.tree.problems)
        states.append(state)
    kinds = {**builtin_kinds(), **ctx.reconciler_kinds(), **(known or {})}
    all_objects = [o for s in states for o in s.objects]
    problems.extend(check_kinds(all_objects, kinds))
    seen: dict[Any, DesiredObject] = {}
    for o in all_objects:  # the same object from two sources is a conflict too
        if o.ref in seen and seen[o.ref] is not o:
            problems.append(Problem(o.source.file, o.source.line, f"{o.ref} is also declared at {seen[o.ref].source}"))
        seen[o.ref] = o
    for state in states:
        problems.extend(_namespaceless(state, {**kinds, **crd_kinds(all_objects)}))
    if problems:
        raise DesiredStateError(problems)
    fill_namespaces(all_objects, kinds)
    for w in (w for s in states for w in s.warnings):
        ctx.progress(f"desired: warning: {w}")
    cached = f"; {renders.hits} of {renders.hits + renders.misses} renders from the cache" if renders.hits else ""
    ctx.progress(f"desired: {len(all_objects)} objects from {len(states)} source(s){cached}")
    return DesiredState(states)


def _flux_tree(
    co: Checkout, spec: SourceSpec, label: str, objects: list[DesiredObject], reconciler: str, renders: RenderCache
) -> Tree:
    """Follow the Flux Kustomizations of the source that apply this same repository."""
    prefix = f"{label}:" if label else ""
    checkout = co.path

    def render_path(path: str, layer: FluxLayer) -> Rendered:
        return renders.render(RenderKey(co.sha, path, label, "", reconciler, layer), checkout)

    def load_doc(file: str, doc: int) -> LoadedDoc | None:
        try:
            docs = load_all((checkout / file.removeprefix(prefix)).read_bytes())
        except (OSError, YamlLoadError):
            return None
        return docs[doc] if 0 <= doc < len(docs) else None

    return fluxtree.expand(spec.name, spec.url, spec.path, objects, render_path, load_doc)


def _namespaceless(state: SourceState, kinds: dict[tuple[str, str], KindInfo]) -> list[Problem]:
    """Namespaced objects that name no namespace: the source's own go to `default` (rebuild tells
    Flux so); under a Kustomization from git without targetNamespace Flux refuses them."""
    problems: list[Problem] = []
    nodes = {n.key: n for n in state.tree.nodes} if state.tree else {}
    default_kinds: set[str] = set()
    for o in state.objects:
        info = kinds.get((o.ref.group, o.ref.kind))
        if o.ref.namespace or info is None or not info.namespaced:
            continue
        if not o.applied_by:
            default_kinds.add(o.ref.kind)
            continue
        node = nodes.get(o.applied_by)
        if node is not None and not node.target_namespace:
            problems.append(
                Problem(
                    o.source.file,
                    o.source.line,
                    f"{o.ref.kind}/{o.ref.name} names no namespace and Flux Kustomization {node.key} ({node.source}) sets no "
                    "targetNamespace: kustomize-controller refuses to apply it (namespace not specified); "
                    "add metadata.namespace, or spec.targetNamespace to the Kustomization",
                )
            )
    state.default_namespace_kinds = sorted(default_kinds)
    return problems


# --------------------------------------------------------------------------- stacks config


def cluster_config(ctx: Context) -> dict[str, Any]:
    c = ctx.config.cluster
    return {"name": c.name, "provider": c.provider, "nodes": c.nodes, "context": c.context, "stateDir": str(ctx.root)}


def platform_config(ctx: Context, desired: DesiredState) -> dict[str, Any]:
    import pulumi.automation as auto

    rc = ctx.config.reconciler
    sources = []
    creds: dict[str, Any] = {}
    for s in desired.sources:
        resolved = s.spec.credentials.resolve(ctx.config.base_dir)
        sources.append(
            {
                "name": s.spec.name,
                "objectName": s.flux_name,
                "repoName": s.flux_repo,
                "url": s.url,
                "branch": s.spec.branch,
                "path": s.spec.path,
                "revision": s.checkout.sha if s.spec.revision else "",
                "interval": rc.interval,
                "hasCredentials": bool(resolved),
                "targetNamespace": s.spec.namespace,
                "defaultNamespaceKinds": s.default_namespace_kinds,
                "drop": s.tree.drop if s.tree else [],
            }
        )
        if resolved:
            creds[s.spec.name] = {
                "username": auto.ConfigValue(resolved[0], secret=True),
                "password": auto.ConfigValue(resolved[1], secret=True),
            }
    cfg: dict[str, Any] = {
        "clusterStack": f"organization/rebuild-cluster/{ctx.stack}",
        "clusterName": ctx.config.cluster.name,
        "namespaces": ["rebuild-system", *_source_namespaces(desired)],
        "reconciler": rc.kind,
        "sources": sources,
    }
    if creds:
        cfg["gitCredentials"] = creds
    if rc.kind == "flux":
        cfg["fluxCrds"] = [str(p) for c in ("source-controller", "kustomize-controller") for p in ctx.toolchain.flux_crds(c)]
        if ctx.config.cluster.provider != "local":
            cfg["fluxInstallManifest"] = str(flux_install.render_install(ctx.toolchain))
    else:
        cfg["argocdInstallManifest"] = str(ctx.toolchain.argocd_install_manifest())
    if ctx.config.reconciler.sops_age_key_file:
        cfg["sopsAgeKeyFile"] = str((ctx.config.base_dir / ctx.config.reconciler.sops_age_key_file).resolve())
    return cfg


def _source_namespaces(desired: DesiredState) -> list[str]:
    """Sources' target namespaces that git does not create itself (Flux needs them to exist)."""
    declared = {o.ref.name for o in desired.objects if o.ref.kind == "Namespace" and o.ref.group == ""}
    return sorted({s.spec.namespace for s in desired.sources if s.spec.namespace and s.spec.namespace not in declared})


# --------------------------------------------------------------------------- plan


@dataclass
class PlanResult:
    desired: DesiredState
    order: list[dict[str, Any]]
    previews: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "sources": [s.to_dict() for s in self.desired.sources],
            "objects": len(self.desired.objects),
            "inventory": self.desired.inventory(),
            "order": self.order,
            "stacks": self.previews,
        }


def plan(ctx: Context, revisions: dict[str, str] | None = None) -> PlanResult:
    """Everything `up` would do, changing nothing: stack previews, object inventory, order."""
    desired = load_desired(ctx, revisions)
    order = table(apply_order(desired.objects))
    previews: list[dict[str, Any]] = []
    pulumi = ctx.pulumi
    cluster_dir = ctx.stacks_dir / "cluster"
    ctx.progress("plan: pulumi preview stacks/cluster")
    res = pulumi.preview(cluster_dir, ctx.stack, cluster_config(ctx))
    previews.append({"stack": "cluster", "changes": res.summary})
    has_cluster = _has_output(pulumi, cluster_dir, ctx.stack, "kubeconfig")
    if has_cluster:
        ctx.progress("plan: pulumi preview stacks/platform")
        pres = pulumi.preview(ctx.stacks_dir / "platform", ctx.stack, platform_config(ctx, desired))
        previews.append({"stack": "platform", "changes": pres.summary})
    else:
        previews.append(
            {
                "stack": "platform",
                "changes": {},
                "note": "previewed after the cluster exists: its kubeconfig is an output of the cluster stack",
            }
        )
    return PlanResult(desired, order, previews)


def _has_output(pulumi: Pulumi, project: Path, stack: str, name: str) -> bool:
    try:
        pulumi.output(project, stack, name)
    except RebuildError:
        return False
    return True


# --------------------------------------------------------------------------- up


@dataclass
class UpResult:
    phases: Phases
    desired: DesiredState | None = None
    report: VerifyReport | None = None
    changed: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def converged(self) -> bool:
        return self.report is not None and self.report.converged

    @property
    def nothing_changed(self) -> bool:
        return bool(self.changed) and all(not v for v in self.changed.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "converged": self.converged,
            "nothing_changed": self.nothing_changed,
            "rto_seconds": round(self.phases.total, 3),
            "phases": self.phases.to_list(),
            "sources": [s.to_dict() for s in self.desired.sources] if self.desired else [],
            "changes": self.changed,
            "verify": self.report.to_dict() if self.report else None,
            "error": self.error,
        }


def _changes(summary: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in summary.items() if k != "same" and v}


def up(
    ctx: Context,
    revisions: dict[str, str] | None = None,
    *,
    verify_timeout: float | None = None,
    phases: Phases | None = None,
) -> UpResult:
    """The recovery. Phases are recorded into ``phases`` (when given) even if a phase raises."""
    phases = phases if phases is not None else Phases()
    result = UpResult(phases)
    try:
        return _up(ctx, result, revisions, verify_timeout)
    except RebuildError as err:
        err.partial = result  # type: ignore[attr-defined]  # what was done before the failure, for reports
        raise
    except KeyboardInterrupt:
        phase = next((p.name for p in reversed(phases.items) if p.status == "interrupted"), "")
        stopped = Interrupted(
            f"rebuild up was interrupted during the {phase or 'first'} phase; what was running stopped cleanly",
            fix="rerun the same command: finished phases are checked and skipped quickly, the interrupted one starts over",
            phase=phase,
        )
        stopped.partial = result  # type: ignore[attr-defined]
        raise stopped from None


PHASES = ("cluster", "platform", "reconciler")


def _up(ctx: Context, result: UpResult, revisions: dict[str, str] | None, verify_timeout: float | None) -> UpResult:
    phases = result.phases
    with phases.phase("desired"):
        result.desired = desired = load_desired(ctx, revisions)
    for name in PHASES:
        with phases.phase(name):
            result.changed[name] = run_phase(ctx, name, desired)
    kube = Kube.from_kubeconfig(kubeconfig_path(ctx))
    try:
        with phases.phase("verify") as ph:
            ctx.progress(f"verify: {len(desired.objects)} objects")
            report = wait_converged(kube, desired.objects, ctx.config.verify, timeout=verify_timeout, progress=ctx.progress)
            result.report = report
            s = report.summary()
            ph.detail = f"{s['verified']}/{s['objects']} verified"
            if not report.converged:
                ph.status = "failed"
    finally:
        kube.close()
    return result


def kubeconfig_path(ctx: Context) -> Path:
    return ctx.root / "clusters" / ctx.config.cluster.name / "rebuild-kubeconfig"


def live_kube(ctx: Context) -> Kube:
    """A client for the cluster rebuild.yaml names, as its provider reaches it (verify, capture)."""
    from rebuild.clusters import get_cluster

    c = ctx.config.cluster
    cluster = get_cluster(c.provider, c.name, nodes=c.nodes, context=c.context or None, root=ctx.root)
    kubeconfig = cluster.kubeconfig()
    if not kubeconfig.exists():
        raise ConfigError(f"cluster {c.name} has no kubeconfig at {kubeconfig}", fix="run `rebuild up` first")
    return Kube.from_kubeconfig(kubeconfig)


def run_phase(ctx: Context, name: str, desired: DesiredState) -> dict[str, Any]:
    """One phase of `up`, idempotent on its own (so a runbook can run, and resume, phase by phase)."""
    pulumi = ctx.pulumi
    if name == "cluster":
        ctx.progress(f"cluster: pulumi up stacks/cluster (stack {ctx.stack}, provider {ctx.config.cluster.provider})")
        # refresh: a cluster whose processes died (or a deleted cluster) is noticed and brought back.
        res = pulumi.up(ctx.stacks_dir / "cluster", ctx.stack, cluster_config(ctx), ctx.progress, refresh=True)
        _write_kubeconfig(pulumi.output(ctx.stacks_dir / "cluster", ctx.stack, "kubeconfig"), kubeconfig_path(ctx))
        return _changes(res.summary)
    if name == "platform":
        ctx.progress("platform: pulumi up stacks/platform")
        res = pulumi.up(ctx.stacks_dir / "platform", ctx.stack, platform_config(ctx, desired), ctx.progress)
        return _changes(res.summary)
    if name == "reconciler":
        kube = Kube.from_kubeconfig(kubeconfig_path(ctx))
        try:
            return start_reconciler(ctx, kube, kubeconfig_path(ctx), desired)
        finally:
            kube.close()
    raise ValueError(f"unknown phase {name!r}")


def _write_kubeconfig(text: str, path: Path) -> None:

    atomic_write(path, text)


def start_reconciler(ctx: Context, kube: Kube, kubeconfig: Path, desired: DesiredState) -> dict[str, Any]:
    """Make sure the reconciler runs and is Ready at every source's revision; return what it had to do."""
    rc = ctx.config.reconciler
    if rc.kind != "flux":
        raise ConfigError(
            "reconciler argocd: the Argo CD controller cannot run on this machine, so `up` cannot wait for it to sync",
            fix="use reconciler.kind: flux here; the argocd install and Applications are created by the platform stack",
        )
    did: dict[str, Any] = {}
    watchdog: Callable[[], None] | None = None
    if ctx.config.cluster.provider == "local":
        from rebuild.reconcilers import flux_local

        controllers = flux_local.FluxLocal(
            ctx.root / "clusters" / ctx.config.cluster.name / "flux", kubeconfig, toolchain=ctx.toolchain
        )
        started = controllers.ensure_running()
        did["controllers_started"] = started
        if started:
            ctx.progress("reconciler: started source-controller and kustomize-controller (host processes)")

        def watchdog() -> None:
            # A controller that dies while we wait (OOM, kill) would turn the wait into a timeout.
            dead = [c.name for c in controllers.status().components if not c.alive]
            if dead:
                ctx.progress(f"reconciler: {', '.join(dead)} stopped running; restarting the Flux controllers")
                controllers.ensure_running()
                did["controllers_restarted"] = did.get("controllers_restarted", 0) + 1

    wait_flux_ready(ctx, kube, desired, did, watchdog=watchdog)
    return {k: v for k, v in did.items() if v}


@dataclass
class _Watched:
    """One Flux object `up` waits for, and how to name it in a message."""

    state: SourceState
    api: str
    kind: str
    name: str
    namespace: str
    declared: Source | None = None  # file:line in git (nested Kustomizations)
    any_revision: bool = False  # a Kustomization of another source: Ready is enough
    retried: str = ""  # the failure message a confirming reconcile was requested for
    stamp: str = ""

    @property
    def label(self) -> str:
        where = f" ({self.declared})" if self.declared else ""
        return f"{self.kind} {self.namespace}/{self.name}{where}"


def _watched(desired: DesiredState) -> list[_Watched]:
    out: list[_Watched] = []
    for s in desired.sources:
        out.append(_Watched(s, flux.SOURCE_API, "GitRepository", s.flux_repo, s.flux_namespace))
        out.append(_Watched(s, flux.KUSTOMIZE_API, "Kustomization", s.flux_name, s.flux_namespace))
        for node in s.tree.nodes[1:] if s.tree else []:
            assert node.ref is not None
            if node.suspended:
                continue  # git keeps it paused: it will never report Ready
            out.append(
                _Watched(
                    s, flux.KUSTOMIZE_API, "Kustomization", node.ref.name, node.ref.namespace, node.source, not node.followed
                )
            )
    return out


def wait_flux_ready(
    ctx: Context,
    kube: Kube,
    desired: DesiredState,
    did: dict[str, Any],
    timeout: float = 300,
    watchdog: Callable[[], None] | None = None,
) -> None:
    """Ask Flux to reconcile now (annotation), then wait for every source, and every Kustomization
    followed from it (in dependsOn order), to be Ready at its commit.

    A failure retrying cannot fix (a build or validation error at the expected revision, a
    dependency git does not declare) ends the wait at once with exit 2, the reconciler's message
    and the file:line of the object it names; a failure that is not known to be permanent is
    confirmed by one requested reconcile that fails the same way. ``watchdog`` runs on every poll
    (on the local provider: restart a controller that died).
    """
    watched = _watched(desired)
    stamp = str(time.time())
    for w in watched:
        if w.declared is not None:
            continue  # applied by Flux from git: not there yet on a new cluster
        current = kube.get(w.api, w.kind, w.name, w.namespace) or {}
        sha = w.state.checkout.sha
        ready = (flux.source_ready if w.kind == "GitRepository" else flux.kustomization_ready)(current, sha)
        if not ready.ready:
            kube.patch(
                current or {"apiVersion": w.api, "kind": w.kind, "metadata": {"name": w.name, "namespace": w.namespace}},
                {"metadata": {"annotations": {flux.REQUESTED_AT: stamp}}},
                field_manager="rebuild",
            )
            did.setdefault("requested_reconcile", []).append(f"{w.kind}/{w.name}")
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        if watchdog is not None:
            watchdog()
        notes: list[str] = []
        paused: list[_Watched] = []
        pending = 0
        for w in watched:
            obj = kube.get(w.api, w.kind, w.name, w.namespace)
            sha = "" if w.any_revision else w.state.checkout.sha
            if w.kind == "GitRepository":
                r = flux.source_ready(obj, sha)
            elif w.any_revision:
                r = flux.Readiness(flux.is_ready(obj), flux.ready_message(obj))
            else:
                r = flux.kustomization_ready(obj, sha)
            if r.ready:
                continue
            pending += 1
            notes.append(f"{w.kind.lower()} {w.name}: {r.message}")
            if r.message == "Kustomization is suspended" and w.declared is None:
                paused.append(w)
                continue
            _check_permanent(ctx, kube, w, obj, desired)
        if paused:
            # Someone paused reconciliation on purpose; waiting would only end in a timeout.
            names = ", ".join(w.name for w in paused)
            raise RebuildError(
                f"Flux Kustomization(s) {names} in {paused[0].namespace} are suspended, so they cannot converge",
                fix=f"resume them (`flux resume kustomization {paused[0].name} -n {paused[0].namespace}`, "
                "or set spec.suspend: false) and rerun",
            )
        if not pending:
            return
        note = "; ".join(notes)
        if note != last:
            ctx.progress(f"reconciler: {note}")
            last = note
        if time.monotonic() > deadline:
            raise RebuildError(
                f"Flux did not become Ready at the expected revision in {timeout:.0f}s: {note}",
                fix=(
                    f"check the controllers' logs ({ctx.root / 'clusters' / ctx.config.cluster.name / 'flux' / 'logs'})"
                    if ctx.config.cluster.provider == "local"
                    else "check the controllers' logs (kubectl -n flux-system logs deploy/source-controller, "
                    "deploy/kustomize-controller)"
                ),
            )
        time.sleep(0.5)


def _check_permanent(ctx: Context, kube: Kube, w: _Watched, obj: dict[str, Any] | None, desired: DesiredState) -> None:
    """Raise when ``obj`` failed in a way retrying the same revision cannot fix."""
    if obj is None:
        return
    failure = flux.failure(obj, "" if w.any_revision else w.state.checkout.sha)
    if failure is None:
        return
    verdict = flux.classify_failure(failure, defined_kinds={kind for _, kind in crd_kinds(desired.objects)})
    if verdict == "transient" or (verdict == "unknown" and w.kind == "GitRepository"):
        return  # a fetch can fail for many passing reasons (a cut transfer): only known ones are final
    # Even a known-permanent reason is confirmed by one requested reconcile that fails the same
    # way: a controller's temporary folder removed under it also reads "BuildFailed".
    handled = str((obj.get("status") or {}).get("lastHandledReconcileAt") or "")
    same = flux.same_failure(w.retried, failure.message)
    if not w.retried or not same:
        w.retried, w.stamp = failure.message, str(time.time())
        kube.patch(obj, {"metadata": {"annotations": {flux.REQUESTED_AT: w.stamp}}}, field_manager="rebuild")
        ctx.progress(f"reconciler: {w.label} failed; asking Flux to retry once to tell a lasting error from a passing one")
        return
    if handled != w.stamp:
        return  # the retry has not run yet
    where = _locate(failure.message, desired)
    raise RebuildError(
        f"{w.label} cannot apply revision {w.state.checkout.sha[:12]}: {failure.reason}: {failure.message}"
        + (f" (declared at {where})" if where else ""),
        fix=f"fix it in git{' at ' + where if where else ''} and rerun; retrying the same revision cannot fix it",
    )


_OBJECT_IN_MESSAGE = re.compile(r"\b([A-Z][A-Za-z0-9]+)/(?:([a-z0-9][-a-z0-9.]*)/)?([a-z0-9][-a-z0-9.]*)")
_FIELD_IN_MESSAGE = re.compile(r"(?:^|\s)\.((?:[A-Za-z0-9_-]+|\[[^\]]+\])(?:\.(?:[A-Za-z0-9_-]+)|\[[^\]]+\])*)")


def _locate(message: str, desired: DesiredState) -> str:
    """The file:line of the object (and field) a reconciler's message names, when rebuild knows it."""
    for m in _OBJECT_IN_MESSAGE.finditer(message):
        kind, ns, name = m.group(1), m.group(2) or "", m.group(3)
        for o in desired.objects:
            if o.ref.kind == kind and o.ref.name == name and (not ns or o.ref.namespace == ns):
                f = _FIELD_IN_MESSAGE.search(message[m.end() :])
                if f:
                    path = tuple(p for p in re.split(r"\.(?![^\[]*\])", f.group(1)) if p and not p.startswith("["))
                    return str(o.source_of(path))
                return str(o.source)
    return ""
