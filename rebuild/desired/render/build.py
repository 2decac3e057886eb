"""A git checkout turned into the desired objects, each knowing the file and line it came from.

Why the lines matter: every message about an object (verify, drift, a broken revision)
points at the place in git a person must edit, and the backport edits exactly that place.

Rendering is the reconciler's: a folder with a kustomization is built with kustomize; a folder
without one is read the way Flux's kustomize-controller generates one for it (every ``.yaml``/
``.yml`` file below it, and every sub-folder holding a kustomization as one kustomize
directory, not descended into). Both go through one kustomize build (see
:mod:`rebuild.adapters.kustomize`) that also carries a Flux Kustomization's own fields and the
source's ``namespace``, and that records where each object came from; :mod:`rebuild.desired.kustsource`
turns that record into the file:line of every field. Flux's post-build variable substitution
runs on the built objects exactly as kustomize-controller runs it.

Every problem (invalid YAML, missing apiVersion/kind/name, duplicate objects, kinds nobody
defines, paths that leave the repository, symlinks out of it, a kustomization kustomize cannot
build) is collected and reported together with file:line, before anything touches a cluster.
Files a reconciler would silently skip (``.json`` in a folder Flux generates a kustomization
for) are reported as warnings.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from rebuild.adapters.kustomize import BuildOutput, Wrapper
from rebuild.adapters.kustomize import build as kustomize_build
from rebuild.core.model import LIST_KEYS, Declared, DesiredObject, FieldPath, ObjectRef, Source
from rebuild.core.yamlload import LoadedDoc, YamlLoadError, load_all
from rebuild.desired.kustsource import (
    KUSTOMIZATION_FILES,
    KNode,
    apply_node,
    doc_field_sources,
    generated_name_matches,
    index_node,
    selector_path,
)
from rebuild.desired.varsub import DISABLED_KEY, SubstitutionError, has_expression, substitute
from rebuild.toolchain.kubectl import KustomizeMissing, kustomize_binary

__all__ = [
    "KUSTOMIZATION_FILES",
    "LIST_KEYS",
    "FluxLayer",
    "KindInfo",
    "Problem",
    "Rendered",
    "builtin_kinds",
    "check_kinds",
    "crd_kinds",
    "fill_namespaces",
    "kustomize_binary",
    "render",
    "selector_path",
]

MAX_FILE_BYTES = 20 * 1024 * 1024
ORIGIN = "config.kubernetes.io/origin"
TRANSFORMATIONS = "alpha.config.kubernetes.io/transformations"
Builder = Callable[[Wrapper], BuildOutput]


class _FastLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """libyaml when present; timestamps and !!binary stay text, as sigs.k8s.io/yaml keeps them
    (the same rules as rebuild.core.yamlload, without its per-line bookkeeping)."""


_FastLoader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))
_FastLoader.add_constructor("tag:yaml.org,2002:binary", lambda loader, node: loader.construct_scalar(node))
_FAST: Any = _FastLoader


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


@dataclass
class Rendered:
    objects: list[DesiredObject] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def by_ref(self) -> dict[ObjectRef, DesiredObject]:
        return {o.ref: o for o in self.objects}


@dataclass
class FluxLayer:
    """A Flux Kustomization's own build fields, applied the way kustomize-controller applies them.

    ``node`` indexes them with their lines (in the Kustomization's file); ``fields`` are the
    kustomize fields to add (namespace from targetNamespace, namePrefix, nameSuffix, patches,
    images, labels/commonAnnotations from commonMetadata); ``components`` are relative to the
    Kustomization's path; ``variables`` are the postBuild variables (None: no substitution) and
    ``variable_sources`` where each is defined.
    """

    node: KNode | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    components: list[str] = field(default_factory=list)
    variables: dict[str, str] | None = None
    variable_sources: dict[str, Source] = field(default_factory=dict)


# --------------------------------------------------------------------------- kinds


@dataclass(frozen=True)
class KindInfo:
    namespaced: bool
    source: str  # "builtin", "crd:<file:line>", "cluster"


def builtin_kinds() -> dict[tuple[str, str], KindInfo]:
    data = json.loads(resources.files("rebuild").joinpath("data", "builtin_kinds.json").read_text(encoding="utf-8"))
    out: dict[tuple[str, str], KindInfo] = {}
    for key, info in data["kinds"].items():
        group, _, kind = key.rpartition("/")
        out[(group, kind)] = KindInfo(bool(info["namespaced"]), "builtin")
    return out


def crd_kinds(objects: Iterable[DesiredObject]) -> dict[tuple[str, str], KindInfo]:
    out: dict[tuple[str, str], KindInfo] = {}
    for o in objects:
        if o.ref.kind == "CustomResourceDefinition" and o.ref.group == "apiextensions.k8s.io":
            spec = o.body.get("spec") or {}
            names = spec.get("names") or {}
            if spec.get("group") and names.get("kind"):
                out[(str(spec["group"]), str(names["kind"]))] = KindInfo(spec.get("scope") != "Cluster", f"crd:{o.source}")
    return out


# --------------------------------------------------------------------------- files


@dataclass
class _Doc:
    """One object document of a file: a YAML document, or one item of a ``kind: List``."""

    index: int
    prefix: tuple[str | int, ...]
    data: Any
    line: int
    lines: dict[tuple[str | int, ...], int]

    @property
    def name(self) -> str:
        meta = self.data.get("metadata") if isinstance(self.data, dict) else None
        return str(meta.get("name") or "") if isinstance(meta, dict) else ""

    @property
    def namespace(self) -> str:
        meta = self.data.get("metadata") if isinstance(self.data, dict) else None
        return str(meta.get("namespace") or "") if isinstance(meta, dict) else ""


def _object_docs(docs: list[LoadedDoc]) -> list[_Doc]:
    out: list[_Doc] = []
    for i, d in enumerate(docs):
        data = d.data
        if isinstance(data, dict) and str(data.get("kind", "")).endswith("List") and isinstance(data.get("items"), list):
            for j, item in enumerate(data["items"]):
                pre: tuple[str | int, ...] = ("items", j)
                lines = {p[2:]: ln for p, ln in d.lines.items() if p[:2] == pre}
                out.append(_Doc(i, pre, item, d.lines.get(pre, d.line), lines))
        else:
            out.append(_Doc(i, (), data, d.line, d.lines))
    return out


class _Repo:
    """File access confined to one checkout: no path or symlink may lead outside it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self._docs: dict[str, list[_Doc]] = {}
        self._rel: dict[str, str] = {}

    def rel(self, p: Path) -> str:
        key = str(p)
        hit = self._rel.get(key)
        if hit is None:
            try:
                hit = str(p.resolve().relative_to(self.root))
            except ValueError:
                hit = key
            self._rel[key] = hit
        return hit

    def inside(self, p: Path, referrer: str, line: int) -> bool:
        resolved = p.resolve()
        if resolved.is_relative_to(self.root):
            return True
        if p.is_symlink():
            self.problems.append(Problem(referrer, line, f"{p.name} is a symlink to {resolved}, outside the repository"))
        else:
            self.problems.append(Problem(referrer, line, f"{p} leads outside the repository"))
        return False

    def load(self, p: Path) -> list[LoadedDoc]:
        rel = self.rel(p)
        try:
            size = p.stat().st_size
            if size > MAX_FILE_BYTES:
                self.problems.append(Problem(rel, 0, f"file is {size // 1024**2} MB; manifests over 20 MB are refused"))
                return []
            return load_all(p.read_bytes())
        except YamlLoadError as exc:
            self.problems.extend(Problem(rel, pr.line, pr.message) for pr in exc.problems)
        except OSError as exc:
            self.problems.append(Problem(rel, 0, f"cannot read: {exc.strerror}"))
        return []

    def docs(self, rel: str) -> list[_Doc]:
        if rel not in self._docs:
            p = self.root / rel
            self._docs[rel] = _object_docs(self.load(p)) if p.is_file() and self.inside(p, rel, 0) else []
        return self._docs[rel]

    def reader(self, kdir: Path, referrer: str) -> Callable[[str], tuple[str, str] | None]:
        """``read(path relative to kdir)`` for generators and patch files, confined to the repo."""

        def read(rel_path: str) -> tuple[str, str] | None:
            p = kdir / rel_path
            if not p.is_file() or not p.resolve().is_relative_to(self.root):
                return None
            try:
                return p.read_text(encoding="utf-8"), self.rel(p)
            except (OSError, UnicodeDecodeError):
                return None

        del referrer
        return read


def kustomization_file(d: Path) -> Path | None:
    for name in KUSTOMIZATION_FILES:
        if (d / name).is_file():
            return d / name
    return None


# --------------------------------------------------------------------------- the kustomization tree


@dataclass
class _Index:
    nodes: dict[str, KNode] = field(default_factory=dict)  # by repo-relative kustomization file
    parents: dict[str, list[str]] = field(default_factory=dict)  # kustomization file -> files including it
    files: list[str] = field(default_factory=list)  # resource files listed, in order
    remote: list[tuple[Source, str]] = field(default_factory=list)  # remote bases and where they are listed


def _index_tree(repo: _Repo, kdir: Path, index: _Index, parent: str | None = None) -> None:
    kfile = kustomization_file(kdir)
    if kfile is None:
        return
    krel = repo.rel(kfile)
    if parent is not None:
        index.parents.setdefault(krel, []).append(parent)
    if krel in index.nodes:
        return
    docs = repo.load(kfile)
    if not docs or not isinstance(docs[0].data, dict):
        index.nodes[krel] = KNode(krel)
        return
    k, doc = docs[0].data, docs[0]
    index.nodes[krel] = index_node(krel, doc, read=repo.reader(kdir, krel))

    def line(*p: str | int) -> int:
        return doc.lines.get(p, doc.line)

    if k.get("helmCharts"):
        repo.problems.append(
            Problem(
                krel,
                line("helmCharts"),
                "helmCharts needs `kustomize build --enable-helm`, which Flux's kustomize-controller does not run: "
                "install the chart with a HelmRelease instead",
            )
        )
    for key in ("resources", "bases", "components"):
        for i, entry in enumerate(k.get(key) or []):
            if not isinstance(entry, str):
                repo.problems.append(Problem(krel, line(key, i), f"{key} entries must be paths or URLs, not {entry!r}"))
                continue
            if "://" in entry or entry.startswith("git@") or entry.startswith("github.com/"):
                # A remote base: kustomize fetches it (as Flux does); its objects are rendered and
                # verified, and their fields point at this line (they cannot be edited here).
                index.remote.append((Source(krel, line(key, i), "remote", (entry,)), entry))
                continue
            target = kdir / entry
            if not repo.inside(target, krel, line(key, i)):
                continue
            if target.is_dir():
                _index_tree(repo, target, index, krel)
            elif target.is_file():
                index.files.append(repo.rel(target))


def _flux_generated(repo: _Repo, target: Path, reconciler: str) -> tuple[list[Path], list[Path]]:
    """The files and kustomize folders Flux's generator lists for a folder without a kustomization.

    Like kustomize-controller: every ``.yaml``/``.yml`` file below ``target`` in lexical order, a
    sub-folder holding a kustomization is one entry and is not descended into. Hidden folders are
    skipped (source-controller leaves ``.git``, ``.github`` ... out of the artifact). Argo CD's
    directory sources also read ``.json``; Flux does not, so with Flux those are warnings.
    """
    files: list[Path] = []
    dirs: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(target):
        here = Path(dirpath)
        keep = []
        for n in sorted(dirnames):
            if n.startswith("."):
                continue
            sub = here / n
            if kustomization_file(sub) is not None:
                dirs.append(sub)
            else:
                keep.append(n)
        dirnames[:] = keep
        for f in sorted(filenames):
            p = here / f
            if f.endswith((".yaml", ".yml")) and f not in KUSTOMIZATION_FILES:
                files.append(p)
            elif f.endswith(".json"):
                if reconciler == "argocd":
                    files.append(p)
                else:
                    repo.warnings.append(
                        Problem(
                            repo.rel(p),
                            0,
                            "not applied: Flux's generated kustomization includes only .yaml/.yml files; "
                            "rename it or list it in a kustomization.yaml",
                        )
                    )
    # Walk order is per folder; Flux walks the whole tree lexically (files and folders mixed).
    file_set = set(files)
    entries = sorted([*files, *dirs], key=str)
    return [p for p in entries if p in file_set], [p for p in entries if p not in file_set]


def _check_object(data: Any, file: str, line: int, problems: list[Problem]) -> bool:
    if not isinstance(data, dict):
        problems.append(Problem(file, line, f"a manifest must be a mapping, not {type(data).__name__}"))
        return False
    missing = [k for k in ("apiVersion", "kind") if not isinstance(data.get(k), str) or not data.get(k)]
    meta = data.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta.get("name"):
        missing.append("metadata.name")
    if missing:
        what = f"{data.get('kind') or 'object'}"
        problems.append(Problem(file, line, f"{what} is missing {', '.join(missing)}"))
        return False
    return True


# --------------------------------------------------------------------------- render


def render(
    checkout: Path,
    path: str = ".",
    *,
    label: str = "",
    namespace: str = "",
    flux: FluxLayer | None = None,
    reconciler: str = "flux",
    build: Builder = kustomize_build,
) -> Rendered:
    """Render the desired objects of ``path`` inside ``checkout``; never raises for bad content.

    ``namespace`` is the source's namespace option (Flux's targetNamespace: every namespaced
    object lands there); ``flux`` the fields of the Flux Kustomization that applies ``path``.
    """
    repo = _Repo(checkout)
    result = Rendered()
    target = checkout / path
    if not repo.inside(target, "rebuild.yaml", 0):
        result.problems = repo.problems
        return result
    if not target.is_dir():
        result.problems.append(Problem(path, 0, "path does not exist in the repository"))
        return _labelled(result, label)
    index = _Index()
    resources_: list[Path] = []
    checked: set[str] = set()
    if kustomization_file(target) is not None:
        _index_tree(repo, target, index)
        resources_.append(target)
    else:
        files, dirs = _flux_generated(repo, target, reconciler)
        for f in files:
            if not repo.inside(f, repo.rel(target), 0):
                continue
            rel = repo.rel(f)
            index.files.append(rel)
            checked.add(rel)
            for d in repo.docs(rel):
                if d.data is None:
                    continue
                if isinstance(d.data, dict) and not d.data.get("apiVersion") and not d.data.get("kind"):
                    repo.problems.append(
                        Problem(
                            rel,
                            d.line,
                            "not a Kubernetes manifest, in a folder without a kustomization: Flux's generated "
                            "kustomization fails on it too; move it out of the source path, list the manifests in a "
                            "kustomization.yaml, or name a narrower path",
                        )
                    )
                    continue
                _check_object(d.data, rel, d.line, repo.problems)
            resources_.append(f)
        for sub in dirs:
            _index_tree(repo, sub, index)
            resources_.append(sub)
    # Load and check every listed manifest first: YAML errors and missing fields are reported with
    # their own file:line (kustomize would stop at the first one, and name no line).
    for rel in index.files:
        if rel not in checked:
            checked.add(rel)
            for d in repo.docs(rel):
                if d.data is not None:
                    _check_object(d.data, rel, d.line, repo.problems)
    components = [target / c for c in (flux.components if flux else [])]
    if repo.problems:
        # kustomize cannot build this revision; still check the manifests it lists, so every
        # problem (missing fields, duplicates, unknown kinds) is reported at once.
        for rel in index.files:
            # Plain folders' files were checked above; kustomize's resources are checked here.
            sink = [] if rel in checked else result.problems
            for d in repo.docs(rel):
                if d.data is not None and _check_object(d.data, rel, d.line, sink):
                    src = Source(rel, d.line)
                    result.objects.append(DesiredObject(ObjectRef.of(d.data), str(d.data["apiVersion"]), d.data, src))
        result.problems[:0] = repo.problems
        result.warnings = repo.warnings
        _check_duplicates(result)
        return _labelled(result, label)
    fields = dict(flux.fields) if flux else {}
    if namespace:
        fields["namespace"] = namespace
    if not resources_:
        result.warnings = repo.warnings
        return _labelled(result, label)
    chunks = _chunks(repo, target, resources_, fields, bool(components))
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(chunks), BUILD_WORKERS)) as pool:
            outs = list(pool.map(lambda chunk: build(Wrapper(chunk, components, fields)), chunks))
    except KustomizeMissing as exc:
        result.problems.append(Problem(repo.rel(target), 0, f"{exc}; install kubectl >= 1.27 or kustomize"))
        return _labelled(result, label)
    for out in outs:
        if out.error:
            result.problems.append(_build_problem(out.error, repo, index, target))
        else:
            _collect(out, repo, index, flux, result)
    result.problems[:0] = repo.problems
    result.warnings = repo.warnings
    _check_duplicates(result)
    return _labelled(result, label)


# kustomize's build time grows with the square of the objects in one build (kustomize#5084):
# 1,000 objects take about 3 s on 2 cores, 10,000 about 8 minutes. Entries that cannot see each
# other are therefore built in chunks of about this many objects, in parallel.
CHUNK_OBJECTS = 400
BUILD_WORKERS = max(2, os.cpu_count() or 2)
# Fields of a build that tie its entries together (a prefix rewrites references across them):
# with any of them, everything is built at once, as kustomize would.
_JOINING_FIELDS = ("namePrefix", "nameSuffix", "patches", "replacements", "images")


def _chunks(repo: _Repo, target: Path, resources: list[Path], fields: dict[str, Any], components: bool) -> list[list[Path]]:
    """Split a build into independent parts when that cannot change its result.

    Safe when the entries are only listed together: a folder Flux generates a kustomization for,
    or a kustomization whose only field is ``resources``, and no field of the Flux Kustomization
    (or component) that works across entries. Each part is weighed by its YAML documents.
    """
    if components or any(k in fields for k in _JOINING_FIELDS):
        return [resources]
    entries = resources
    kfile = kustomization_file(target)
    if kfile is not None:
        if resources != [target]:
            return [resources]
        docs = repo.load(kfile)
        k = docs[0].data if docs and isinstance(docs[0].data, dict) else None
        if not isinstance(k, dict) or set(k) - {"apiVersion", "kind", "resources"} or not isinstance(k.get("resources"), list):
            return [resources]
        listed = [target / str(e) for e in k["resources"] if isinstance(e, str) and "://" not in e]
        if len(listed) != len(k["resources"]) or len(listed) < 2:
            return [resources]
        entries = listed
    if len(entries) < 2:
        return [resources]
    out: list[list[Path]] = [[]]
    weight = 0
    for e in entries:
        w = _weight(e)
        if out[-1] and weight + w > CHUNK_OBJECTS:
            out.append([])
            weight = 0
        out[-1].append(e)
        weight += w
    return out


def _weight(p: Path) -> int:
    """About how many objects an entry holds: its YAML documents (a folder: all of its files)."""
    files = [p] if p.is_file() else [f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file()]
    total = 0
    for f in files:
        try:
            raw = f.read_bytes()
            total += max(1, raw.count(b"\nkind:") + raw.startswith(b"kind:"))
        except OSError:
            total += 1
    return total


def _build_problem(error: str, repo: _Repo, index: _Index, target: Path) -> Problem:
    """kustomize's error, pinned to the kustomization (and line) it names when it names one."""
    last = error.strip().splitlines()[-1]
    last = re.sub(r'^E\d{4} [\d:.]+\s+\d+ run\.go:\d+\] "command failed" err=', "", last).strip('"')
    file, line = repo.rel(target), 0
    m = re.search(r"failed to find unique target for patch (\S+?)\.(\S+?)/([^.\s]+)", last)
    if m:
        kind, name = m.group(1).split(".")[0], m.group(3)
        for node in index.nodes.values():
            for p in node.patches:
                if p.smp is not None and isinstance(p.smp.data, dict):
                    meta = p.smp.data.get("metadata") or {}
                    if p.smp.data.get("kind") == kind and meta.get("name") == name:
                        why = f"kustomize build failed: patch targets {kind}/{name}, which is not declared"
                        return Problem(p.file, p.smp.line, why)
    for kfile in index.nodes:
        if kfile in last or str(repo.root / Path(kfile).parent) in last:
            file = kfile
            break
    return Problem(file, line, "kustomize build failed: " + last)


def _split_docs(text: str) -> list[str]:
    return [d for d in re.split(r"(?m)^---[ \t]*$", text) if d.strip()]


def _collect(out: BuildOutput, repo: _Repo, index: _Index, flux: FluxLayer | None, result: Rendered) -> None:
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
        if not _check_object(data, "(kustomize output)", 0, result.problems):
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


def _pick(docs: list[_Doc], kind: str, name: str) -> _Doc | None:
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
    repo: _Repo,
    index: _Index,
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


def _remote_source(repo_url: str, path: str, index: _Index) -> Source:
    """The kustomization line that lists the remote base an object came from."""
    for where, entry in index.remote:
        if repo_url.rstrip("/").removesuffix(".git") in entry:
            return Source(where.file, where.line, "remote", (f"{repo_url}//{path}",))
    return Source(index.remote[0][0].file if index.remote else "(remote)", 0, "remote", (f"{repo_url}//{path}",))


def _generated(
    data: dict[str, Any], ref: ObjectRef, kfile: str, index: _Index, fields: dict[FieldPath, Source], names: set[str]
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


def _ancestors(kfile: str, index: _Index) -> list[str]:
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


def _labelled(result: Rendered, label: str) -> Rendered:
    """With several sources, every file is named ``<source>:<path>`` so messages say which repo."""
    if not label:
        return result
    pre = f"{label}:"

    def lab(s: Source) -> Source:
        return s if s.file.startswith(pre) else dataclasses.replace(s, file=pre + s.file)

    for o in result.objects:
        o.source = lab(o.source)
        o.field_sources = {p: lab(s) for p, s in o.field_sources.items()}
        if o.declared is not None:
            o.declared = dataclasses.replace(o.declared, file=pre + o.declared.file)
    result.problems = [Problem(p.file if p.file.startswith(pre) else pre + p.file, p.line, p.message) for p in result.problems]
    result.warnings = [Problem(pre + p.file, p.line, p.message) for p in result.warnings]
    return result


def _check_duplicates(result: Rendered) -> None:
    seen: dict[ObjectRef, DesiredObject] = {}
    unique: list[DesiredObject] = []
    for o in result.objects:
        first = seen.get(o.ref)
        if first is not None:
            result.problems.append(Problem(o.source.file, o.source.line, f"{o.ref} is declared twice (first at {first.source})"))
            continue
        seen[o.ref] = o
        unique.append(o)
    result.objects = unique


def check_kinds(objects: list[DesiredObject], known: dict[tuple[str, str], KindInfo]) -> list[Problem]:
    """Objects whose kind neither Kubernetes, a CRD in git, the reconciler nor the cluster defines."""
    allk = {**known, **crd_kinds(objects)}
    problems: list[Problem] = []
    for o in objects:
        if (o.ref.group, o.ref.kind) not in allk:
            problems.append(
                Problem(
                    o.source.file,
                    o.source.line,
                    f"{o.ref}: kind {o.ref.kind} ({o.api_version}) is not defined by "
                    "Kubernetes, by a CustomResourceDefinition in git or by the cluster",
                )
            )
    return problems


def fill_namespaces(objects: list[DesiredObject], known: dict[tuple[str, str], KindInfo]) -> None:
    """Namespaced objects without a namespace land in `default`, as kubectl and Flux apply them."""
    allk = {**known, **crd_kinds(objects)}
    for o in objects:
        info = allk.get((o.ref.group, o.ref.kind))
        if info and info.namespaced and not o.ref.namespace:
            o.body.setdefault("metadata", {})["namespace"] = "default"
            o.ref = ObjectRef(o.ref.group, o.ref.kind, "default", o.ref.name)
        elif info and not info.namespaced and o.ref.namespace:
            o.ref = ObjectRef(o.ref.group, o.ref.kind, "", o.ref.name)
