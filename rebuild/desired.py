"""A git checkout turned into the desired objects, each knowing the file and line it came from.

Why the lines matter: every message about an object (verify, drift, a broken revision)
points at the place in git a person must edit, and the backport edits exactly that place.
For kustomize roots the rendered objects are mapped back to their sources: the manifest
that declares the object, and for each field the overlay patch, ``images:`` or
``replicas:`` entry that last set it.

Rendering is the same as the reconciler's: a folder with a kustomization is built with
kustomize (``kubectl kustomize``); a plain folder contributes every ``*.yaml``/``*.yml`` file
below it, multi-document files included.

Every problem (invalid YAML, missing apiVersion/kind/name, duplicate objects, kinds nobody
defines, paths that leave the repository, symlinks out of it) is collected and reported
together with file:line, before anything touches a cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from rebuild.model import (
    CONTAINER_PORT_KEYS,
    LIST_KEYS,
    SERVICE_PORT_KEYS,
    DesiredObject,
    FieldPath,
    ObjectRef,
    PathSeg,
    Source,
)
from rebuild.yamlload import LoadedDoc, YamlLoadError, load_all

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
MAX_FILE_BYTES = 20 * 1024 * 1024


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

    def by_ref(self) -> dict[ObjectRef, DesiredObject]:
        return {o.ref: o for o in self.objects}


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


# --------------------------------------------------------------------------- paths


def selector_path(index_path: tuple[str | int, ...], data: Any) -> FieldPath:
    """Turn a path with list indexes into one that addresses keyed list items by key."""
    out: list[PathSeg] = []
    node = data
    parent_key = ""
    for seg in index_path:
        if isinstance(seg, int) and isinstance(node, list):
            item = node[seg] if 0 <= seg < len(node) else None
            keys = LIST_KEYS.get(parent_key)
            if parent_key == "ports" and isinstance(item, dict):
                keys = CONTAINER_PORT_KEYS if "containerPort" in item else SERVICE_PORT_KEYS
            if keys and isinstance(item, dict) and keys[0] in item:
                values = [str(item.get(k, "TCP" if k == "protocol" else "")) for k in keys]
                out.append((",".join(keys), ",".join(values)) if len(keys) > 1 else (keys[0], values[0]))
            else:
                out.append(seg)
            node = item
            parent_key = ""
        else:
            out.append(str(seg))
            node = node.get(seg) if isinstance(node, dict) else None
            parent_key = str(seg)
    return tuple(out)


def _doc_field_sources(doc: LoadedDoc, file: str) -> dict[FieldPath, Source]:
    return {selector_path(p, doc.data): Source(file, line) for p, line in doc.lines.items() if p}


# --------------------------------------------------------------------------- files


class _Repo:
    """File access confined to one checkout: no path or symlink may lead outside it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.problems: list[Problem] = []

    def rel(self, p: Path) -> str:
        try:
            return str(p.resolve().relative_to(self.root))
        except ValueError:
            return str(p)

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


def _kustomization_file(d: Path) -> Path | None:
    for name in KUSTOMIZATION_FILES:
        if (d / name).is_file():
            return d / name
    return None


def _yaml_files(d: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(d):
        dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith((".yaml", ".yml")))
    return out


# --------------------------------------------------------------------------- kustomize sources


@dataclass
class _PatchSource:
    file: str
    doc: LoadedDoc | None  # strategic merge patch document
    ops: list[tuple[str, int]]  # json6902: (json pointer path, line)
    target: dict[str, str]


@dataclass
class _KustIndex:
    docs: dict[ObjectRef, tuple[str, LoadedDoc]] = field(default_factory=dict)
    all_docs: list[tuple[str, LoadedDoc]] = field(default_factory=list)
    patches: list[_PatchSource] = field(default_factory=list)
    images: list[tuple[str, Source]] = field(default_factory=list)  # (image name, where)
    replicas: dict[str, Source] = field(default_factory=dict)  # deployment name -> where


def _index_kustomization(repo: _Repo, kdir: Path, index: _KustIndex, seen: set[Path]) -> None:
    kfile = _kustomization_file(kdir)
    if kfile is None or kdir.resolve() in seen:
        return
    seen.add(kdir.resolve())
    krel = repo.rel(kfile)
    docs = repo.load(kfile)
    if not docs or not isinstance(docs[0].data, dict):
        return
    k, lines = docs[0].data, docs[0].lines

    def line(*p: str | int) -> int:
        return lines.get(p, docs[0].line)

    for key in ("resources", "bases", "components"):
        for i, entry in enumerate(k.get(key) or []):
            if not isinstance(entry, str) or "://" in entry or entry.startswith("git@"):
                repo.problems.append(Problem(krel, line(key, i), f"remote {key} entry {entry!r} is not supported"))
                continue
            target = kdir / entry
            if not repo.inside(target, krel, line(key, i)):
                continue
            if target.is_dir():
                _index_kustomization(repo, target, index, seen)
            elif target.is_file():
                for doc in repo.load(target):
                    index.all_docs.append((repo.rel(target), doc))
                    if isinstance(doc.data, dict):
                        ref = ObjectRef.of(doc.data)
                        index.docs.setdefault(ref, (repo.rel(target), doc))
    for i, entry in enumerate(k.get("patchesStrategicMerge") or []):
        _add_patch(repo, kdir, index, krel, line("patchesStrategicMerge", i), entry, {}, smp=True)
    for i, entry in enumerate(k.get("patches") or []):
        if isinstance(entry, dict):
            body = entry.get("path") or entry.get("patch")
            _add_patch(
                repo,
                kdir,
                index,
                krel,
                # inline patch text starts on the line after `patch: |`; line N inside it is P + N
                line("patches", i, "patch") if "patch" in entry else line("patches", i),
                body,
                entry.get("target") or {},
                smp=None,
                inline="patch" in entry,
            )
    for i, entry in enumerate(k.get("patchesJson6902") or []):
        if isinstance(entry, dict):
            _add_patch(
                repo,
                kdir,
                index,
                krel,
                line("patchesJson6902", i, "patch") if "patch" in entry else line("patchesJson6902", i),
                entry.get("path") or entry.get("patch"),
                entry.get("target") or {},
                smp=False,
                inline="patch" in entry,
            )
    for i, img in enumerate(k.get("images") or []):
        if isinstance(img, dict) and img.get("name"):
            index.images.append((str(img["name"]), Source(krel, line("images", i))))
    for i, rep in enumerate(k.get("replicas") or []):
        if isinstance(rep, dict) and rep.get("name"):
            index.replicas[str(rep["name"])] = Source(krel, line("replicas", i, "count"))


def _add_patch(
    repo: _Repo,
    kdir: Path,
    index: _KustIndex,
    krel: str,
    line: int,
    body: Any,
    target: Any,
    *,
    smp: bool | None,
    inline: bool = False,
) -> None:
    if not isinstance(body, str):
        return
    if inline:
        try:
            docs = load_all(body)
        except YamlLoadError:
            return
        file, base_line = krel, line
    else:
        p = kdir / body
        if not repo.inside(p, krel, line):
            return
        docs = repo.load(p)
        file, base_line = repo.rel(p), 0
    for doc in docs:
        data = doc.data
        is_json = isinstance(data, list) if smp is None else not smp
        tgt = {k: str(v) for k, v in (target or {}).items() if isinstance(v, (str, int))}
        if is_json and isinstance(data, list):
            ops = []
            for i, op in enumerate(data):
                if isinstance(op, dict) and isinstance(op.get("path"), str):
                    ops.append((op["path"], (base_line + doc.lines.get((i,), 1)) if inline else doc.lines.get((i,), 1)))
            index.patches.append(_PatchSource(file, None, ops, tgt))
        elif isinstance(data, dict):
            if inline:
                doc = LoadedDoc(doc.data, base_line, {p: base_line + ln for p, ln in doc.lines.items()})
            index.patches.append(_PatchSource(file, doc, [], tgt))


def _patch_applies(patch: _PatchSource, obj: dict[str, Any]) -> bool:
    meta = obj.get("metadata") or {}
    if patch.doc is not None and isinstance(patch.doc.data, dict) and not patch.target:
        pm = patch.doc.data.get("metadata") or {}
        return bool(
            patch.doc.data.get("kind") == obj.get("kind")
            and pm.get("name") == meta.get("name")
            and (not pm.get("namespace") or pm.get("namespace") == meta.get("namespace"))
        )
    t = patch.target
    return bool(t) and all(
        [
            not t.get("kind") or t["kind"] == obj.get("kind"),
            not t.get("name") or t["name"] == meta.get("name"),
            not t.get("namespace") or t["namespace"] == meta.get("namespace"),
            not t.get("group") or str(obj.get("apiVersion", "")).startswith(t["group"] + "/"),
        ]
    )


def _pointer_to_index_path(pointer: str) -> tuple[str | int, ...]:
    out: list[str | int] = []
    for tok in pointer.lstrip("/").split("/"):
        tok = tok.replace("~1", "/").replace("~0", "~")
        out.append(int(tok) if tok.isdigit() else tok)
    return tuple(out)


def _apply_kustomize_sources(obj: DesiredObject, index: _KustIndex) -> None:
    for patch in index.patches:
        if not _patch_applies(patch, obj.body):
            continue
        if patch.doc is not None:
            for p, line in patch.doc.lines.items():
                if p and p[0] not in ("apiVersion", "kind") and p[:2] not in (("metadata", "name"), ("metadata", "namespace")):
                    # Resolve list indexes against the patch's own data (SMP matches by merge key).
                    obj.field_sources[selector_path(p, patch.doc.data)] = Source(patch.file, line)
        for pointer, line in patch.ops:
            ip = _pointer_to_index_path(pointer)
            if ip and ip[-1] == "-":
                ip = ip[:-1]
            obj.field_sources[selector_path(ip, obj.body)] = Source(patch.file, line)
    containers: list[tuple[str, ...]] = [("spec", "template", "spec"), ("spec", "jobTemplate", "spec", "template", "spec")]
    for base in containers:
        node: Any = obj.body
        for seg in base:
            node = node.get(seg) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        for list_key in ("containers", "initContainers"):
            for c in node.get(list_key) or []:
                image = str(c.get("image", "")) if isinstance(c, dict) else ""
                for name, where in index.images:
                    if image == name or image.startswith(name + ":") or image.startswith(name + "@"):
                        obj.field_sources[(*base, list_key, ("name", str(c.get("name"))), "image")] = where
    if obj.ref.name in index.replicas and obj.ref.kind in ("Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"):
        obj.field_sources[("spec", "replicas")] = index.replicas[obj.ref.name]


# --------------------------------------------------------------------------- render


def kustomize_binary() -> str:
    exe = shutil.which("kubectl") or shutil.which("kustomize")
    if exe is None:
        raise FileNotFoundError("kubectl (with kustomize) is not on PATH")
    return exe


def _kustomize_build(kdir: Path) -> tuple[str, str]:
    exe = kustomize_binary()
    argv = [exe, "kustomize", str(kdir)] if exe.endswith("kubectl") else [exe, "build", str(kdir)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    return proc.stdout, proc.stderr


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


def render(checkout: Path, path: str = ".", *, label: str = "") -> Rendered:
    """Render the desired objects of ``path`` inside ``checkout``; never raises for bad content."""
    repo = _Repo(checkout)
    result = Rendered()
    prefix = f"{label}:" if label else ""
    target = checkout / path
    if not repo.inside(target, "rebuild.yaml", 0):
        result.problems = repo.problems
        return result
    if not target.is_dir():
        result.problems.append(Problem(f"{prefix}{path}", 0, "path does not exist in the repository"))
        return result
    if _kustomization_file(target) is not None:
        index = _KustIndex()
        _index_kustomization(repo, target, index, set())
        if repo.problems:
            # kustomize cannot build this revision; still check the manifests it lists, so
            # every problem (missing fields, duplicates, unknown kinds) is reported at once.
            for file, doc in index.all_docs:
                if doc.data is not None and _check_object(doc.data, f"{prefix}{file}", doc.line, result.problems):
                    src = Source(f"{prefix}{file}", doc.line)
                    result.objects.append(DesiredObject(ObjectRef.of(doc.data), str(doc.data["apiVersion"]), doc.data, src))
        else:
            try:
                out, err = _kustomize_build(target)
            except FileNotFoundError as exc:
                result.problems.append(Problem(repo.rel(target), 0, f"{exc}; install kubectl >= 1.27 or kustomize"))
                return result
            if err.strip() and not out.strip():
                result.problems.append(Problem(repo.rel(target), 0, "kustomize build failed: " + err.strip().splitlines()[-1]))
            else:
                _collect_kustomized(out, index, result, prefix)
    else:
        for f in _yaml_files(target):
            if not repo.inside(f, repo.rel(target), 0):
                continue
            rel = repo.rel(f)
            for doc in repo.load(f):
                if doc.data is None:
                    continue
                if not _check_object(doc.data, f"{prefix}{rel}", doc.line, result.problems):
                    continue
                src = Source(f"{prefix}{rel}", doc.line)
                result.objects.append(
                    DesiredObject(
                        ObjectRef.of(doc.data),
                        str(doc.data["apiVersion"]),
                        doc.data,
                        src,
                        {p: Source(f"{prefix}{s.file}", s.line) for p, s in _doc_field_sources(doc, rel).items()},
                    )
                )
    result.problems[:0] = [Problem(f"{prefix}{p.file}", p.line, p.message) for p in repo.problems]
    _check_duplicates(result)
    return result


def _collect_kustomized(out: str, index: _KustIndex, result: Rendered, prefix: str) -> None:
    try:
        docs = load_all(out)
    except YamlLoadError as exc:
        result.problems.extend(Problem("(kustomize output)", p.line, p.message) for p in exc.problems)
        return
    for doc in docs:
        if doc.data is None:
            continue
        if not _check_object(doc.data, "(kustomize output)", doc.line, result.problems):
            continue
        ref = ObjectRef.of(doc.data)
        src_doc = index.docs.get(ref)
        if src_doc is not None:
            file, sdoc = src_doc
            source = Source(f"{prefix}{file}", sdoc.line)
            fields = {p: Source(f"{prefix}{s.file}", s.line) for p, s in _doc_field_sources(sdoc, file).items()}
        else:
            source = Source(f"{prefix}(kustomize output)", doc.line)
            fields = {}
        obj = DesiredObject(ref, str(doc.data["apiVersion"]), doc.data, source, fields)
        _apply_kustomize_sources(obj, index)
        if prefix:
            obj.field_sources = {
                p: s if s.file.startswith(prefix) else Source(f"{prefix}{s.file}", s.line) for p, s in obj.field_sources.items()
            }
        result.objects.append(obj)


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
