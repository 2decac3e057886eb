"""The desired state of a recovery: every source fetched at its revision, rendered, checked.

This is the first step of `plan`, `up`, `verify` and `capture`, and the one that must fail
first: broken desired state stops the run here with every problem and its file:line (exit 2),
before any cluster is created or changed. A local-folder source is published by rebuild's git
server (the reconciler needs a URL); with Flux, the Kustomizations the source applies from the
same repository are followed (``rebuild.desired.fluxtree``) so the inventory is what Flux will
apply, not only the root folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rebuild.adapters.git import Checkout, Mirrors
from rebuild.core.config import SourceSpec
from rebuild.core.errors import ConfigError, RebuildError
from rebuild.core.model import DesiredObject
from rebuild.core.yamlload import LoadedDoc, YamlLoadError, load_all
from rebuild.desired import fluxtree
from rebuild.desired.cache import RenderCache, RenderKey
from rebuild.desired.fluxtree import Tree
from rebuild.desired.render import FluxLayer, KindInfo, Problem, Rendered, builtin_kinds, check_kinds, crd_kinds, fill_namespaces
from rebuild.reconcilers import flux
from rebuild.recover.context import Context


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
    # The URL of the chart repository rebuild serves from the source's `charts` folder, once served.
    charts_url: str = ""

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


def source_url(ctx: Context, spec: SourceSpec) -> str:
    """The URL the reconciler (and rebuild) fetch; a local folder is published by rebuild's git server."""
    if not spec.is_local():
        return spec.url
    from rebuild.adapters import gitserver

    folder = (ctx.config.base_dir / spec.url).resolve()
    if not folder.is_dir():
        raise ConfigError(f"source {spec.name}: local folder {folder} does not exist", fix="fix sources[].url in rebuild.yaml")
    server = gitserver.ensure_server(ctx.layout.gitserver)
    bare = server.repo_path(spec.name)
    gitserver.publish_dir(folder, bare, message=f"rebuild: snapshot of {folder}", branch=spec.branch)
    return server.repo_url(spec.name)


def serve_charts(ctx: Context, state: SourceState) -> str:
    """Serve the source's ``charts`` folder, at the fetched commit, as a Helm repository on 127.0.0.1.

    One detached server per source and state dir (adapters/helmrepo), rebuilt from the checkout
    on every call and kept on its port, so the HelmRepository rebuild made keeps its URL; ``cluster
    down`` stops it with the git server. Returns its URL.
    """
    from rebuild.adapters import helmrepo

    spec = state.spec
    folder = state.checkout.path / spec.charts
    index = next(i for i, s in enumerate(ctx.config.sources) if s.name == spec.name)
    if not folder.is_dir() or not helmrepo.find_charts(folder):
        raise ConfigError(
            f"source {spec.name}: charts folder {spec.charts!r} has no chart (no */Chart.yaml) at {state.checkout.sha[:12]}",
            fix=f"commit chart folders under {spec.charts}/ or fix sources.{index}.charts in {ctx.config.path}",
        )
    where = ctx.layout.chart_repo(spec.name)
    try:
        served = helmrepo.ensure_repo(where, folder, created=state.checkout.committed_at)
    except OSError as exc:  # the state dir full or read-only: a clean error, not a traceback
        raise RebuildError(
            f"source {spec.name}: cannot write the chart repository of {spec.charts}/ under {where}: {exc.strerror}",
            fix="free space in the state dir (or make it writable) and rerun",
        ) from exc
    repo = f"{flux.NAMESPACE}/{spec.charts_repository}"
    ctx.progress(f"charts: {spec.charts}/ of {spec.name} served as HelmRepository {repo} at {served.url}")
    state.charts_url = served.url
    return served.url


def serve_all_charts(ctx: Context, desired: DesiredState) -> None:
    """:func:`serve_charts` for every source that has a ``charts`` folder."""
    for s in desired.sources:
        if s.spec.charts:
            serve_charts(ctx, s)


def load_desired(
    ctx: Context, revisions: dict[str, str] | None = None, known: dict[tuple[str, str], KindInfo] | None = None
) -> DesiredState:
    """Fetch and render every source; raise DesiredStateError with all problems found."""
    mirrors = Mirrors(ctx.layout.mirrors)
    renders = RenderCache(ctx.layout.render_cache)
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
