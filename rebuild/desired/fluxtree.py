"""The Flux Kustomizations a source declares, followed the way Flux follows them.

Why: nearly every Flux repository is laid out the way ``flux bootstrap`` writes it: a cluster
folder holding ``flux-system/`` (the Flux install in ``gotk-components.yaml``, and in
``gotk-sync.yaml`` the GitRepository + Kustomization that make Flux apply that very folder) beside
Flux Kustomizations for infrastructure and apps that point at other paths of the same repository,
ordered with ``dependsOn``. Rendering the cluster folder alone yields only those Kustomization
objects; the workloads are in the paths they point at. So rebuild follows every Kustomization
whose source is this repository (its own build fields, ``targetNamespace``, patches, images,
``postBuild`` variables included), so that each object is still verified and captured with its
file:line, and orders them by ``dependsOn``.

The bootstrap pair in gotk-sync.yaml is recognised as the configured source: rebuild's own
GitRepository and Kustomization take its names (so the other Kustomizations' ``sourceRef`` finds
them) and carry rebuild.yaml's URL, branch and credentials (the deploy key in gotk-sync.yaml's
Secret is the chicken-and-egg git cannot hold; a local folder or a drill is served by rebuild's
own git server). The git copies of that pair and the repository's Flux install (objects labelled
``app.kubernetes.io/part-of: flux``) are left out of what Flux applies and of the desired state:
rebuild installs its own pinned Flux. Kustomizations of other sources are listed, not followed.

Pure: rendered objects in (and a render function for the paths), tree out.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rebuild.core.model import DesiredObject, ObjectRef, Source
from rebuild.core.yamlload import LoadedDoc
from rebuild.desired.kustsource import index_node
from rebuild.desired.render import FluxLayer, Problem, Rendered

KUSTOMIZE_GROUP = "kustomize.toolkit.fluxcd.io"
SOURCE_GROUP = "source.toolkit.fluxcd.io"
FLUX_INSTALL_LABEL = ("app.kubernetes.io/part-of", "flux")
MAX_DEPTH = 20

RenderPath = Callable[[str, FluxLayer], Rendered]
LoadDoc = Callable[[str, int], LoadedDoc | None]


@dataclass
class FluxNode:
    """One Flux Kustomization of the tree (``ref`` None: the source's own, made by rebuild)."""

    ref: ObjectRef | None
    source: Source | None
    path: str
    depends_on: list[str] = field(default_factory=list)  # "namespace/name"
    target_namespace: str = ""
    objects: int = 0
    followed: bool = True
    note: str = ""
    parent: str = ""
    suspended: bool = False  # spec.suspend: true in git

    @property
    def key(self) -> str:
        return f"{self.ref.namespace}/{self.ref.name}" if self.ref else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kustomization": self.key or "(source)",
            "source": str(self.source) if self.source else None,
            "path": self.path,
            "depends_on": self.depends_on,
            "target_namespace": self.target_namespace,
            "objects": self.objects,
            "followed": self.followed,
            "note": self.note,
            "applied_by": self.parent,
        }


@dataclass
class Tree:
    flux_namespace: str
    flux_name: str  # the Kustomization rebuild makes for the source
    flux_repo: str  # and its GitRepository (the bootstrap pair's names when git has one)
    nodes: list[FluxNode]  # dependsOn order, the source's own first
    objects: list[DesiredObject]
    replaced: list[tuple[DesiredObject, str]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    drop: list[dict[str, str]] = field(default_factory=list)  # kustomize selectors Flux must leave out

    def to_dict(self) -> list[dict[str, Any]]:
        return [n.to_dict() for n in self.nodes]


def _spec(o: DesiredObject) -> dict[str, Any]:
    spec = o.body.get("spec")
    return spec if isinstance(spec, dict) else {}


def _norm_path(p: str) -> str:
    """``./clusters/prod/`` and ``clusters/prod`` are the same path (Flux paths are repo-relative)."""
    return posixpath.normpath(p.strip().lstrip("/") or ".")


def _norm_url(url: str) -> str:
    u = re.sub(r"^[a-z+]+://", "", url.strip().lower())
    u = re.sub(r"^[^@/]+@", "", u)
    u = u.replace(":", "/", 1) if re.match(r"^[^/]+:[^/\d]", u) else u
    return u.removesuffix("/").removesuffix(".git")


def _is(o: DesiredObject, group: str, kind: str) -> bool:
    return o.ref.group == group and o.ref.kind == kind


def _source_ref(k: DesiredObject) -> tuple[str, str, str]:
    ref = _spec(k).get("sourceRef") or {}
    return str(ref.get("kind") or ""), str(ref.get("namespace") or k.ref.namespace), str(ref.get("name") or "")


def expand(
    source_name: str,
    source_url: str,
    source_path: str,
    root: list[DesiredObject],
    render_path: RenderPath,
    load_doc: LoadDoc,
    *,
    default_namespace: str = "flux-system",
) -> Tree:
    """Follow the Kustomizations of ``root`` (the rendered source path) that apply this repository."""
    kustomizations = [o for o in root if _is(o, KUSTOMIZE_GROUP, "Kustomization")]
    repos = {(o.ref.namespace, o.ref.name): o for o in root if _is(o, SOURCE_GROUP, "GitRepository")}
    flux_ns, flux_name, flux_repo = default_namespace, source_name, source_name
    replaced: list[tuple[DesiredObject, str]] = []
    drop: list[dict[str, str]] = []
    same_repo: set[tuple[str, str]] = {(default_namespace, source_name)}
    for k in kustomizations:
        kind, ns, name = _source_ref(k)
        if (
            kind == "GitRepository"
            and (ns, name) in repos
            and _norm_path(str(_spec(k).get("path") or ".")) == _norm_path(source_path)
        ):
            # The bootstrap pair: this Kustomization makes Flux apply the source's own path.
            flux_ns, flux_name, flux_repo = k.ref.namespace, k.ref.name, name
            repo = repos[(ns, name)]
            same_repo.add((ns, name))
            why = f"the source's own {{}} (made by rebuild from rebuild.yaml, source {source_name})"
            replaced += [(repo, why.format("GitRepository")), (k, why.format("Kustomization"))]
            drop += [_selector(repo), _selector(k)]
            break
    for (ns, name), repo in repos.items():
        if _norm_url(str(_spec(repo).get("url") or "")) == _norm_url(source_url) and source_url:
            same_repo.add((ns, name))
    install = [o for o in root if _labels(o).get(FLUX_INSTALL_LABEL[0]) == FLUX_INSTALL_LABEL[1]]
    if install:
        replaced += [(o, "part of the repository's Flux install; rebuild installs its own pinned Flux") for o in install]
        drop.append({"labelSelector": f"{FLUX_INSTALL_LABEL[0]}={FLUX_INSTALL_LABEL[1]}"})
    gone = {id(o) for o, _ in replaced}
    objects = [o for o in root if id(o) not in gone]
    own = FluxNode(None, None, _norm_path(source_path), objects=len(objects))
    tree = Tree(flux_ns, flux_name, flux_repo, [own], objects, replaced, [], drop)
    seen: set[str] = {f"{flux_ns}/{flux_name}"}
    queue = [(k, "") for k in kustomizations if id(k) not in gone]
    depth = 0
    while queue and depth < MAX_DEPTH:
        depth += 1
        nxt: list[tuple[DesiredObject, str]] = []
        for k, parent in queue:
            key = f"{k.ref.namespace}/{k.ref.name}"
            if key in seen:
                continue
            seen.add(key)
            node = _follow(k, parent, same_repo, tree, render_path, load_doc)
            tree.nodes.append(node)
            if node.followed:
                new = [o for o in tree.objects if o.applied_by == key and _is(o, KUSTOMIZE_GROUP, "Kustomization")]
                nxt += [(o, key) for o in new]
        queue = nxt
    _order(tree)
    return tree


def _labels(o: DesiredObject) -> dict[str, str]:
    meta = o.body.get("metadata") or {}
    labels = meta.get("labels") if isinstance(meta, dict) else None
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def _selector(o: DesiredObject) -> dict[str, str]:
    return {"group": o.ref.group, "kind": o.ref.kind, "name": o.ref.name, "namespace": o.ref.namespace}


def _follow(
    k: DesiredObject,
    parent: str,
    same_repo: set[tuple[str, str]],
    tree: Tree,
    render_path: RenderPath,
    load_doc: LoadDoc,
) -> FluxNode:
    spec = _spec(k)
    key = f"{k.ref.namespace}/{k.ref.name}"
    deps = [
        f"{d.get('namespace') or k.ref.namespace}/{d.get('name')}"
        for d in spec.get("dependsOn") or []
        if isinstance(d, dict) and d.get("name")
    ]
    node = FluxNode(k.ref, k.source, _norm_path(str(spec.get("path") or ".")), deps, str(spec.get("targetNamespace") or ""))
    node.parent = parent
    kind, ns, name = _source_ref(k)
    if kind != "GitRepository" or (ns, name) not in same_repo:
        node.followed = False
        node.note = f"not followed: its source {kind}/{ns}/{name} is not this repository; rebuild checks only that it is Ready"
        return node
    if spec.get("suspend") is True:
        # Flux applies nothing from it, so a rebuild cannot bring its objects back either.
        node.followed = False
        node.suspended = True
        node.note = "suspended in git (spec.suspend: true): Flux applies nothing from it; its objects are not rebuilt or verified"
        return node
    layer = _layer(k, spec, load_doc, tree, node)
    rendered = render_path(node.path, layer)
    for p in rendered.problems:
        tree.problems.append(Problem(p.file, p.line, f"{p.message} (in Flux Kustomization {key}, {k.source})"))
    for o in rendered.objects:
        o.applied_by = key
    tree.objects.extend(rendered.objects)
    node.objects = len(rendered.objects)
    return node


def _layer(k: DesiredObject, spec: dict[str, Any], load_doc: LoadDoc, tree: Tree, node: FluxNode) -> FluxLayer:
    layer = FluxLayer()
    if spec.get("targetNamespace"):
        layer.fields["namespace"] = str(spec["targetNamespace"])
    for key in ("namePrefix", "nameSuffix"):
        if spec.get(key):
            layer.fields[key] = str(spec[key])
    patches = [p for p in spec.get("patches") or [] if isinstance(p, dict) and p.get("patch")]
    if patches:
        layer.fields["patches"] = [{"patch": p["patch"], **({"target": p["target"]} if p.get("target") else {})} for p in patches]
    images = [i for i in spec.get("images") or [] if isinstance(i, dict) and i.get("name")]
    if images:
        layer.fields["images"] = images
    meta = spec.get("commonMetadata")
    if isinstance(meta, dict):
        if isinstance(meta.get("labels"), dict) and meta["labels"]:
            layer.fields["labels"] = [{"pairs": meta["labels"], "includeSelectors": False, "includeTemplates": False}]
        if isinstance(meta.get("annotations"), dict) and meta["annotations"]:
            layer.fields["commonAnnotations"] = meta["annotations"]
    layer.components = [str(c) for c in spec.get("components") or [] if isinstance(c, str)]
    declared = k.declared
    doc = load_doc(declared.file, declared.doc) if declared is not None else None
    if doc is not None and declared is not None:
        layer.node = index_node(declared.file, doc, kdoc=declared.doc, prefix=(*[str(p) for p in declared.prefix], "spec"))
    post = spec.get("postBuild")
    if isinstance(post, dict):
        layer.variables, layer.variable_sources = _variables(k, post, tree, node, doc)
    return layer


def _variables(
    k: DesiredObject, post: dict[str, Any], tree: Tree, node: FluxNode, doc: LoadedDoc | None
) -> tuple[dict[str, str], dict[str, Source]]:
    """postBuild variables: substituteFrom ConfigMaps/Secrets (from git), then substitute (wins)."""
    values: dict[str, str] = {}
    sources: dict[str, Source] = {}
    by_ref = {o.ref: o for o in tree.objects}
    for i, ref in enumerate(post.get("substituteFrom") or []):
        if not isinstance(ref, dict):
            continue
        kind, name = str(ref.get("kind") or ""), str(ref.get("name") or "")
        target = by_ref.get(ObjectRef("", kind, k.ref.namespace, name))
        if target is None:
            if not ref.get("optional"):
                line = k.source.line
                tree.problems.append(
                    Problem(
                        k.source.file,
                        line,
                        f"Flux Kustomization {node.key}: postBuild.substituteFrom[{i}] names {kind}/{k.ref.namespace}/{name}, "
                        "which git does not declare (Flux would wait for it forever): add it to git or mark it optional",
                    )
                )
            continue
        for key, value in (target.body.get("data") or {}).items():
            if kind == "Secret":
                try:
                    value = base64.b64decode(str(value), validate=True).decode()
                except (binascii.Error, UnicodeDecodeError):
                    continue
            values[str(key)] = str(value).replace("\n", "")
            sources[str(key)] = target.source_of(("data", str(key)))
        for key, value in (target.body.get("stringData") or {}).items() if kind == "Secret" else []:
            values[str(key)] = str(value).replace("\n", "")
            sources[str(key)] = target.source_of(("stringData", str(key)))
    subst = post.get("substitute")
    if isinstance(subst, dict):
        for key, value in subst.items():
            values[str(key)] = str(value).replace("\n", "")
            where = (*_prefix(k), "spec", "postBuild", "substitute", str(key))
            line = doc.lines.get(where, k.source.line) if doc else k.source.line
            sources[str(key)] = Source(k.declared.file if k.declared else k.source.file, line)
    return values, sources


def _prefix(k: DesiredObject) -> tuple[str | int, ...]:
    return k.declared.prefix if k.declared is not None else ()


def _order(tree: Tree) -> None:
    """dependsOn order (Kahn's), the source's own node first; unknown dependencies are problems."""
    own, rest = tree.nodes[0], tree.nodes[1:]
    by_key = {n.key: n for n in rest}
    declared = {f"{o.ref.namespace}/{o.ref.name}" for o in tree.objects if _is(o, KUSTOMIZE_GROUP, "Kustomization")}
    declared.add(f"{tree.flux_namespace}/{tree.flux_name}")
    for n in rest:
        for d in n.depends_on:
            if d not in declared and n.source is not None:
                tree.problems.append(
                    Problem(
                        n.source.file,
                        n.source.line,
                        f"Flux Kustomization {n.key} depends on {d}, which git does not declare: "
                        "Flux would wait for it forever (DependencyNotReady); fix dependsOn",
                    )
                )
    done: list[FluxNode] = []
    left = list(rest)
    while left:
        ready = [n for n in left if all(d not in by_key or by_key[d] in done for d in n.depends_on)]
        if not ready:  # a cycle: Flux would never apply them
            for n in left:
                if n.source is not None:
                    tree.problems.append(
                        Problem(n.source.file, n.source.line, f"Flux Kustomization {n.key} is part of a dependsOn cycle")
                    )
            done += left
            break
        done += ready
        left = [n for n in left if n not in ready]
    tree.nodes = [own, *done]
    # Objects in the same order: verify reports (and waits for) them in dependsOn order.
    rank = {n.key: i for i, n in enumerate(tree.nodes)}
    tree.objects.sort(key=lambda o: rank.get(o.applied_by, 0))
