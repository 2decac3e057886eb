"""kustomize's output turned into objects that know the file:line of each of their fields.

kustomize records where each object came from (``config.kubernetes.io/origin``) and which
kustomizations transformed it; this module reads that record back against the repository's
documents and the kustomization index, and runs Flux's post-build substitution, noting which
variable set each substituted field.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from rebuild.adapters.kustomize import BuildOutput
from rebuild.core.model import Declared, DesiredObject, FieldPath, ObjectRef, Source
from rebuild.core.yamlload import YamlLoadError, load_all
from rebuild.desired.kustsource import apply_node, doc_field_sources, generated_name_matches, selector_path
from rebuild.desired.render.repo import Doc, Repo, check_object
from rebuild.desired.render.results import FluxLayer, Problem, Rendered
from rebuild.desired.render.tree import Index
from rebuild.desired.varsub import DISABLED_KEY, SubstitutionError, has_expression, substitute

ORIGIN = "config.kubernetes.io/origin"
TRANSFORMATIONS = "alpha.config.kubernetes.io/transformations"


class _FastLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """libyaml when present; timestamps and !!binary stay text, as sigs.k8s.io/yaml keeps them
    (the same rules as rebuild.core.yamlload, without its per-line bookkeeping)."""


_FastLoader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))
_FastLoader.add_constructor("tag:yaml.org,2002:binary", lambda loader, node: loader.construct_scalar(node))
_FAST: Any = _FastLoader


def _split_docs(text: str) -> list[str]:
    return [d for d in re.split(r"(?m)^---[ \t]*$", text) if d.strip()]


def collect(out: BuildOutput, repo: Repo, index: Index, flux: FluxLayer | None, result: Rendered) -> None:
    wrapper_kfile = str(out.resolve("kustomization.yaml"))
    for chunk in _split_docs(out.text):
        # kustomize's own output: its lines are never shown, so libyaml reads it (much faster
        # than the line-keeping loader used for the files people wrote).
        try:
            loaded = yaml.load(chunk, Loader=_FAST)
        except yaml.YAMLError as exc:
            result.problems.append(Problem("(kustomize output)", 0, f"kustomize wrote invalid YAML: {exc}"))
            continue
        if not isinstance(loaded, dict):
            continue
        data: dict[str, Any] = loaded
        origin, chain = _pop_build_metadata(data)
        substituted: dict[FieldPath, tuple[str, ...]] = {}
        if flux is not None and flux.variables is not None and not _substitution_disabled(data):
            try:
                subst = load_all(substitute(_dump(data), flux.variables))
            except (SubstitutionError, YamlLoadError) as exc:
                result.problems.append(Problem(_node_file(flux), 0, f"postBuild substitution failed: {exc}"))
                continue
            substituted = {selector_path(p, data): names for p, names in _substituted_paths(data).items()}
            data = subst[0].data if subst and isinstance(subst[0].data, dict) else data
        if not check_object(data, "(kustomize output)", 0, result.problems):
            continue
        obj = _attach(data, origin, chain, out, repo, index, flux, wrapper_kfile)
        for p, names in substituted.items():
            base = obj.source_of(p)
            where = next((flux.variable_sources[n] for n in names if flux and n in flux.variable_sources), base)
            obj.field_sources[p] = Source(where.file, where.line, "substitute", (base.file, base.line, *names))
        result.objects.append(obj)


def _dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=10_000)


def _substitution_disabled(data: dict[str, Any]) -> bool:
    meta = data.get("metadata") or {}
    return any((meta.get(k) or {}).get(DISABLED_KEY) == "disabled" for k in ("labels", "annotations"))


def _substituted_paths(data: Any, path: tuple[str | int, ...] = ()) -> dict[tuple[str | int, ...], tuple[str, ...]]:
    out: dict[tuple[str | int, ...], tuple[str, ...]] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(_substituted_paths(v, (*path, str(k))))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out.update(_substituted_paths(v, (*path, i)))
    elif isinstance(data, str) and has_expression(data):
        out[tuple(path)] = tuple(re.findall(r"\$\{([_a-zA-Z][_a-zA-Z0-9]*)", data))
    return out


def _node_file(flux: FluxLayer) -> str:
    return flux.node.file if flux.node else "(flux)"


def _pop_build_metadata(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    meta = data.get("metadata")
    if not isinstance(meta, dict):
        return {}, []
    ann = meta.get("annotations")
    if not isinstance(ann, dict):
        return {}, []
    origin_text = ann.pop(ORIGIN, None)
    chain_text = ann.pop(TRANSFORMATIONS, None)
    if not ann:
        del meta["annotations"]
    origin = yaml.load(origin_text, Loader=_FAST) if isinstance(origin_text, str) else None
    chain_data = yaml.load(chain_text, Loader=_FAST) if isinstance(chain_text, str) else None
    chain: list[str] = []
    for t in chain_data if isinstance(chain_data, list) else []:
        where = t.get("configuredIn") if isinstance(t, dict) else None
        if isinstance(where, str) and (not chain or chain[-1] != where):
            chain.append(where)
    return (origin if isinstance(origin, dict) else {}), chain


def _pick(docs: list[Doc], kind: str, name: str) -> Doc | None:
    same = [d for d in docs if isinstance(d.data, dict) and d.data.get("kind") == kind]
    exact = [d for d in same if d.name == name]
    if exact:
        return exact[0]
    inside = [d for d in same if d.name and d.name in name]
    if inside:
        return max(inside, key=lambda d: len(d.name))
    return same[0] if len(same) == 1 else None


def _attach(
    data: dict[str, Any],
    origin: dict[str, Any],
    chain: list[str],
    out: BuildOutput,
    repo: Repo,
    index: Index,
    flux: FluxLayer | None,
    wrapper_kfile: str,
) -> DesiredObject:
    ref = ObjectRef.of(data)
    names = {ref.name}
    namespaces = {ref.namespace}
    fields: dict[FieldPath, Source] = {}
    declared: Declared | None = None
    source = Source("(kustomize output)", 0)
    if isinstance(origin.get("path"), str) and not origin.get("repo"):
        rel = repo.rel(out.resolve(origin["path"]))
        doc = _pick(repo.docs(rel), ref.kind, ref.name)
        if doc is not None:
            source = Source(rel, doc.line)
            fields.update(doc_field_sources(doc.lines, doc.data, rel))
            declared = Declared(rel, doc.index, doc.prefix, doc.name, doc.namespace)
            names.add(doc.name)
            namespaces.add(doc.namespace)
        else:
            source = Source(rel, 1)
    elif origin.get("repo"):
        source = _remote_source(str(origin.get("repo")), str(origin.get("path") or ""), index)
        fields[()] = source
    elif isinstance(origin.get("configuredIn"), str):
        kfile = repo.rel(out.resolve(origin["configuredIn"]))
        source = _generated(data, ref, kfile, index, fields, names)
    # kustomize's record of which kustomizations transformed the object, innermost first; the
    # Flux Kustomization's own fields (the temporary wrapper) always come last, as in Flux.
    nodes = [index.nodes.get(repo.rel(out.resolve(c))) for c in chain if str(out.resolve(c)) != wrapper_kfile]
    if flux is not None and flux.node is not None:
        nodes.append(flux.node)
    for node in nodes:
        if node is not None:
            apply_node(node, data, fields, names, namespaces)
    return DesiredObject(ref, str(data["apiVersion"]), data, source, fields, declared)


def _remote_source(repo_url: str, path: str, index: Index) -> Source:
    """The kustomization line that lists the remote base an object came from."""
    for where, entry in index.remote:
        if repo_url.rstrip("/").removesuffix(".git") in entry:
            return Source(where.file, where.line, "remote", (f"{repo_url}//{path}",))
    return Source(index.remote[0][0].file if index.remote else "(remote)", 0, "remote", (f"{repo_url}//{path}",))


def _generated(
    data: dict[str, Any], ref: ObjectRef, kfile: str, index: Index, fields: dict[FieldPath, Source], names: set[str]
) -> Source:
    node = index.nodes.get(kfile)
    if node is None:
        return Source(kfile, 1)
    entry = next((g for g in node.generators if g.kind == ref.kind and generated_name_matches(g.name, ref.name)), None)
    if entry is None:
        return Source(kfile, 1)
    names.add(entry.name)
    fields.update(node.generator_meta)
    data_key = "data"  # Secret generators write base64 `data` too
    for key, where in entry.keys.items():
        fields[(data_key, key)] = where
    # Overlays that merge into (or replace) this generator, nearest first: the outer one wins.
    for outer in _ancestors(kfile, index):
        onode = index.nodes.get(outer)
        for g in onode.generators if onode else []:
            if g.kind == ref.kind and g.name == entry.name and g.behavior in ("merge", "replace"):
                if g.behavior == "replace":
                    for p in [p for p in fields if p[:1] == (data_key,)]:
                        del fields[p]
                for key, where in g.keys.items():
                    fields[(data_key, key)] = where
                if onode is not None:
                    fields.update(onode.generator_meta)
    return entry.entry


def _ancestors(kfile: str, index: Index) -> list[str]:
    out: list[str] = []
    frontier = list(index.parents.get(kfile, []))
    while frontier:
        nxt: list[str] = []
        for f in frontier:
            if f not in out:
                out.append(f)
                nxt.extend(index.parents.get(f, []))
        frontier = nxt
    return out
