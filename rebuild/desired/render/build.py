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
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rebuild.adapters.kustomize import BuildOutput, Wrapper
from rebuild.adapters.kustomize import build as kustomize_build
from rebuild.core.model import DesiredObject, ObjectRef, Source
from rebuild.desired.render.origins import collect
from rebuild.desired.render.repo import Repo, check_object, kustomization_file
from rebuild.desired.render.results import FluxLayer, Problem, Rendered
from rebuild.desired.render.tree import Index, flux_generated, index_tree
from rebuild.toolchain.kubectl import KustomizeMissing

Builder = Callable[[Wrapper], BuildOutput]


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
    repo = Repo(checkout)
    result = Rendered()
    target = checkout / path
    if not repo.inside(target, "rebuild.yaml", 0):
        result.problems = repo.problems
        return result
    if not target.is_dir():
        result.problems.append(Problem(path, 0, "path does not exist in the repository"))
        return _labelled(result, label)
    index = Index()
    resources_: list[Path] = []
    checked: set[str] = set()
    if kustomization_file(target) is not None:
        index_tree(repo, target, index)
        resources_.append(target)
    else:
        files, dirs = flux_generated(repo, target, reconciler)
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
                check_object(d.data, rel, d.line, repo.problems)
            resources_.append(f)
        for sub in dirs:
            index_tree(repo, sub, index)
            resources_.append(sub)
    # Load and check every listed manifest first: YAML errors and missing fields are reported with
    # their own file:line (kustomize would stop at the first one, and name no line).
    for rel in index.files:
        if rel not in checked:
            checked.add(rel)
            for d in repo.docs(rel):
                if d.data is not None:
                    check_object(d.data, rel, d.line, repo.problems)
    components = [target / c for c in (flux.components if flux else [])]
    if repo.problems:
        # kustomize cannot build this revision; still check the manifests it lists, so every
        # problem (missing fields, duplicates, unknown kinds) is reported at once.
        for rel in index.files:
            # Plain folders' files were checked above; kustomize's resources are checked here.
            sink = [] if rel in checked else result.problems
            for d in repo.docs(rel):
                if d.data is not None and check_object(d.data, rel, d.line, sink):
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
            collect(out, repo, index, flux, result)
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


def _chunks(repo: Repo, target: Path, resources: list[Path], fields: dict[str, Any], components: bool) -> list[list[Path]]:
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


def _build_problem(error: str, repo: Repo, index: Index, target: Path) -> Problem:
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
