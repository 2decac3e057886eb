"""Which file and line *sets* each field of a kustomize-built object.

Why this exists: a verify message or a capture edit must point at the line a person changes,
and in the repos people really write that line is rarely in the object's own manifest: a
component's ``images:`` entry sets the tag, an overlay's inline patch sets the replicas, a
``configMapGenerator`` literal or an ``.env`` file line sets a ConfigMap key, ``namespace:`` and
``namePrefix:`` change the identity of everything below them.

How: kustomize records, for every object it builds, the file it came from (or the generator
that made it) and the kustomizations whose transformers ran over it (its ``buildMetadata``
annotations, see :mod:`rebuild.adapters.kustomize`). That record is used as it is; what
kustomize does not record is derived here from the kustomization files themselves: which
*fields* a transformer set (a patch's paths, an ``images:`` entry's containers, a label key), and
which keys a generator's literal, env line or file produced, because kustomize keeps no
per-field history. Each derived source says how the value got there (``Source.via``), so the
backport edits a literal, an env line, an inline patch or an images entry in place, and lists
what it cannot (a value set by a transformer for many objects, a replacement, a substituted
variable) with the line that sets it.

Pure: loaded documents in, sources out.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from rebuild.core.model import CONTAINER_PORT_KEYS, LIST_KEYS, SERVICE_PORT_KEYS, FieldPath, PathSeg, Source
from rebuild.core.yamlload import LoadedDoc, YamlLoadError, load_all

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
HASH_SUFFIX = re.compile(r"-[bcdfghkmnt-z2456789]{10}$")


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


def pointer_path(pointer: str) -> tuple[str | int, ...]:
    out: list[str | int] = []
    for tok in pointer.lstrip("/").split("/"):
        tok = tok.replace("~1", "/").replace("~0", "~")
        out.append(int(tok) if tok.isdigit() else tok)
    return tuple(out)


def kustomize_field_path(text: str) -> FieldPath:
    """``spec.template.spec.containers.[name=web].image`` (replacements' fieldPaths) as a FieldPath."""
    out: list[PathSeg] = []
    for part in re.findall(r"\[[^\]]*\]|[^.\[\]]+", text):
        if part.startswith("["):
            key, _, value = part[1:-1].partition("=")
            out.append((key, value))
        elif part.isdigit():
            out.append(int(part))
        else:
            out.append(part)
    return tuple(out)


def doc_field_sources(lines: dict[tuple[str | int, ...], int], data: Any, file: str) -> dict[FieldPath, Source]:
    return {selector_path(p, data): Source(file, line) for p, line in lines.items() if p}


# --------------------------------------------------------------------------- one kustomization


@dataclass
class PatchSource:
    """One patch: SMP document(s) (with field lines) or JSON 6902 operations (pointer, line)."""

    file: str
    smp: LoadedDoc | None
    ops: list[tuple[str, int]]
    target: dict[str, str]
    via: str = ""  # "" a patch file, "inline-patch" a block scalar in a kustomization
    locator: tuple[Any, ...] = ()


@dataclass
class GeneratorEntry:
    kind: str  # ConfigMap | Secret
    name: str
    behavior: str
    entry: Source
    keys: dict[str, Source] = field(default_factory=dict)


@dataclass
class KNode:
    """What one kustomization (a kustomization.yaml, or a Flux Kustomization's spec) does.

    ``file``/``kdoc``/``prefix`` locate the fields: ``prefix`` is ``()`` for a kustomization file
    and ``("spec",)`` for a Flux Kustomization object, whose ``targetNamespace``, ``namePrefix``,
    ``patches`` and ``images`` kustomize-controller adds to the kustomization it builds.
    """

    file: str
    kdoc: int = 0
    prefix: tuple[str, ...] = ()
    # A kustomize Component: a feature shared by many overlays. Its patches own the values they
    # set, not the structure around them, so a field added live is not written into a component.
    component: bool = False
    namespace: Source | None = None
    name_prefix: Source | None = None
    name_suffix: Source | None = None
    labels: list[tuple[dict[str, str], dict[str, Source], bool]] = field(default_factory=list)  # pairs, lines, metadata only
    annotations: dict[str, tuple[str, Source]] = field(default_factory=dict)
    patches: list[PatchSource] = field(default_factory=list)
    images: list[tuple[dict[str, Any], Source]] = field(default_factory=list)
    replicas: dict[str, Source] = field(default_factory=dict)
    generators: list[GeneratorEntry] = field(default_factory=list)
    generator_meta: dict[FieldPath, Source] = field(default_factory=dict)
    replacements: list[tuple[dict[str, Any], list[tuple[FieldPath, Source]]]] = field(default_factory=list)


def _str_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def index_node(
    file: str,
    doc: LoadedDoc,
    *,
    kdoc: int = 0,
    prefix: tuple[str, ...] = (),
    read: Any = None,
) -> KNode:
    """Index the transformers and generators of one kustomization document.

    ``read(rel_path) -> (text, repo_relative_file) | None`` reads files a generator or a patch
    names, relative to the kustomization's folder (None when it is missing: kustomize reports it).
    """
    node = KNode(file, kdoc, prefix)
    k: Any = doc.data
    for p in prefix:
        k = k.get(p) if isinstance(k, dict) else {}
    if not isinstance(k, dict):
        return node
    node.component = not prefix and k.get("kind") == "Component"

    def line(*p: str | int) -> int:
        for n in range(len(p), 0, -1):
            hit = doc.lines.get((*prefix, *p[:n]))
            if hit is not None:
                return hit
        return doc.line

    def src(*p: str | int, via: str = "transformer", locator: tuple[Any, ...] = ()) -> Source:
        return Source(file, line(*p), via, locator)

    ns_key = "targetNamespace" if prefix else "namespace"
    if isinstance(k.get(ns_key), str):
        node.namespace = src(ns_key)
    if isinstance(k.get("namePrefix"), str):
        node.name_prefix = src("namePrefix")
    if isinstance(k.get("nameSuffix"), str):
        node.name_suffix = src("nameSuffix")
    common = _str_map(k.get("commonLabels"))
    if common:
        node.labels.append((common, {key: src("commonLabels", key) for key in common}, False))
    for i, rule in enumerate(k.get("labels") or []):
        if isinstance(rule, dict):
            pairs = _str_map(rule.get("pairs"))
            meta_only = not rule.get("includeSelectors") and not rule.get("includeTemplates")
            node.labels.append((pairs, {key: src("labels", i, "pairs", key) for key in pairs}, meta_only))
    for key, value in _str_map(k.get("commonAnnotations")).items():
        node.annotations[key] = (value, src("commonAnnotations", key))
    meta = k.get("commonMetadata") if prefix else None
    if isinstance(meta, dict):
        pairs = _str_map(meta.get("labels"))
        if pairs:
            node.labels.append((pairs, {key: src("commonMetadata", "labels", key) for key in pairs}, True))
        for key, value in _str_map(meta.get("annotations")).items():
            node.annotations[key] = (value, src("commonMetadata", "annotations", key))

    for i, img in enumerate(k.get("images") or []):
        if isinstance(img, dict) and img.get("name"):
            node.images.append((img, src("images", i, via="image", locator=(kdoc, (*prefix, "images", i)))))
    for i, rep in enumerate(k.get("replicas") or []):
        if isinstance(rep, dict) and rep.get("name"):
            node.replicas[str(rep["name"])] = src("replicas", i, "count", via="replicas", locator=(kdoc, ("replicas", i)))

    def add_patch(body: Any, tgt: Any, where: tuple[str | int, ...], smp: bool | None) -> None:
        target = {str(a): str(b) for a, b in (tgt or {}).items() if isinstance(b, (str, int))} if isinstance(tgt, dict) else {}
        if not isinstance(body, str):
            return
        inline = "\n" in body or ":" in body
        if inline:
            try:
                docs = load_all(body)
            except YamlLoadError:
                return
            base = line(*where)
            for j, d in enumerate(docs):
                shifted = LoadedDoc(d.data, base + d.line, {p: base + ln for p, ln in d.lines.items()})
                _patch_from(node, file, shifted, target, smp, "inline-patch", (kdoc, (*prefix, *where), j))
            return
        hit = read(body) if read is not None else None
        if hit is None:
            return
        text, rel = hit
        try:
            docs = load_all(text)
        except YamlLoadError:
            return
        for d in docs:
            _patch_from(node, rel, d, target, smp, "", ())

    for i, entry in enumerate(k.get("patches") or []):
        if isinstance(entry, dict):
            if "patch" in entry:
                add_patch(entry.get("patch"), entry.get("target"), ("patches", i, "patch"), None)
            else:
                add_patch(entry.get("path"), entry.get("target"), ("patches", i), None)
    for i, entry in enumerate(k.get("patchesStrategicMerge") or []):
        add_patch(entry, None, ("patchesStrategicMerge", i), True)
    for i, entry in enumerate(k.get("patchesJson6902") or []):
        if isinstance(entry, dict):
            if "patch" in entry:
                add_patch(entry.get("patch"), entry.get("target"), ("patchesJson6902", i, "patch"), False)
            else:
                add_patch(entry.get("path"), entry.get("target"), ("patchesJson6902", i), False)

    for gkey, gkind in (("configMapGenerator", "ConfigMap"), ("secretGenerator", "Secret")):
        for i, g in enumerate(k.get(gkey) or []):
            if isinstance(g, dict) and g.get("name"):
                node.generators.append(_generator(file, gkind, g, (gkey, i), line, read, kdoc))
    opts = k.get("generatorOptions")
    if isinstance(opts, dict):
        for key in _str_map(opts.get("labels")):
            node.generator_meta[("metadata", "labels", key)] = src("generatorOptions", "labels", key)
        for key in _str_map(opts.get("annotations")):
            node.generator_meta[("metadata", "annotations", key)] = src("generatorOptions", "annotations", key)

    for i, rep in enumerate(k.get("replacements") or []):
        if not isinstance(rep, dict):
            continue
        for j, tgt in enumerate(rep.get("targets") or []):
            if not isinstance(tgt, dict):
                continue
            paths = [
                (kustomize_field_path(str(fp)), src("replacements", i, "targets", j, "fieldPaths", n, via="replacement"))
                for n, fp in enumerate(tgt.get("fieldPaths") or [])
            ]
            node.replacements.append((tgt.get("select") or {}, paths))
    return node


def _patch_from(
    node: KNode, file: str, doc: LoadedDoc, target: dict[str, str], smp: bool | None, via: str, locator: tuple[Any, ...]
) -> None:
    data = doc.data
    is_json = isinstance(data, list) if smp is None else not smp
    if is_json and isinstance(data, list):
        ops = [
            (op["path"], doc.lines.get((i,), doc.line))
            for i, op in enumerate(data)
            if isinstance(op, dict) and isinstance(op.get("path"), str)
        ]
        node.patches.append(PatchSource(file, None, ops, target, via, locator))
    elif isinstance(data, dict):
        node.patches.append(PatchSource(file, doc, [], target, via, locator))


def _generator(
    file: str, kind: str, g: dict[str, Any], where: tuple[str | int, ...], line: Any, read: Any, kdoc: int
) -> GeneratorEntry:
    behavior = str(g.get("behavior") or "create")
    entry = GeneratorEntry(kind, str(g["name"]), behavior, Source(file, line(*where, "name"), "generator", (kdoc, where)))
    for j, lit in enumerate(g.get("literals") or []):
        if isinstance(lit, str) and "=" in lit:
            key = lit.split("=", 1)[0].strip()
            entry.keys[key] = Source(file, line(*where, "literals", j), "literal", (kdoc, (*where, "literals", j)))
    for j, env in enumerate(g.get("envs") or ([g["env"]] if isinstance(g.get("env"), str) else [])):
        hit = read(env) if read is not None and isinstance(env, str) else None
        if hit is None:
            continue
        text, rel = hit
        for n, raw in enumerate(text.splitlines(), start=1):
            stripped = raw.strip()
            if not stripped or stripped.startswith("#"):
                continue
            key = stripped.split("=", 1)[0].strip()
            entry.keys[key] = Source(rel, n, "env", (key,))
        del j
    for spec in g.get("files") or []:
        if not isinstance(spec, str):
            continue
        key, _, path = spec.partition("=")
        if not path:
            key, path = posixpath.basename(spec), spec
        hit = read(path) if read is not None else None
        if hit is not None:
            entry.keys[key.strip()] = Source(hit[1], 1, "file", ())
    return entry


# --------------------------------------------------------------------------- applying a node


def _match(pattern: str, value: str) -> bool:
    try:
        return re.fullmatch(pattern, value) is not None
    except re.error:
        return pattern == value


def target_matches(target: dict[str, str], body: dict[str, Any], names: set[str], namespaces: set[str]) -> bool:
    """A kustomize selector against an object (names/namespaces: every identity it had on the way)."""
    if not target:
        return False
    labels = _str_map((body.get("metadata") or {}).get("labels"))
    annotations = _str_map((body.get("metadata") or {}).get("annotations"))
    api = str(body.get("apiVersion") or "")
    group, _, version = api.rpartition("/") if "/" in api else ("", "", api)
    checks = [
        not target.get("kind") or _match(target["kind"], str(body.get("kind"))),
        not target.get("name") or any(_match(target["name"], n) for n in names),
        not target.get("namespace") or any(_match(target["namespace"], n or "default") for n in namespaces),
        not target.get("group") or _match(target["group"], group),
        not target.get("version") or _match(target["version"], version),
        not target.get("labelSelector") or _selector(target["labelSelector"], labels),
        not target.get("annotationSelector") or _selector(target["annotationSelector"], annotations),
    ]
    return all(checks)


def _selector(expr: str, values: dict[str, str]) -> bool:
    for term in (t.strip() for t in expr.split(",") if t.strip()):
        if "!=" in term:
            key, want = (x.strip() for x in term.split("!=", 1))
            if values.get(key) == want:
                return False
        elif "=" in term:
            key, want = (x.strip() for x in term.replace("==", "=").split("=", 1))
            if values.get(key) != want:
                return False
        elif term.startswith("!"):
            if term[1:] in values:
                return False
        elif term not in values:
            return False
    return True


def apply_node(node: KNode, body: dict[str, Any], fields: dict[FieldPath, Source], names: set[str], namespaces: set[str]) -> None:
    """Record in ``fields`` what ``node``'s transformers set on ``body`` (the final object)."""
    if node.namespace is not None and (body.get("metadata") or {}).get("namespace"):
        fields[("metadata", "namespace")] = node.namespace
    renamed = node.name_prefix or node.name_suffix
    if renamed is not None and len(names) > 1:  # kustomize leaves some kinds (Namespace...) unprefixed
        fields[("metadata", "name")] = renamed
    every: list[tuple[FieldPath, Any]] | None = None
    for pairs, lines, meta_only in node.labels:
        every = every if every is not None else [(selector_path(p, body), v) for p, v in _index_paths(body)]
        for key, value in pairs.items():
            for p, v in every:
                if not p or p[-1] != key or v != value or len(p) < 2:
                    continue
                parent = p[-2]
                is_meta = p[:-1] == ("metadata", "labels")
                if is_meta or (not meta_only and parent in ("labels", "matchLabels", "selector")):
                    fields[p] = lines[key]
    for key, (value, where) in node.annotations.items():
        every = every if every is not None else [(selector_path(p, body), v) for p, v in _index_paths(body)]
        for p, v in every:
            if len(p) >= 2 and p[-1] == key and p[-2] == "annotations" and v == value:
                fields[p] = where
    for patch in node.patches:
        if not _patch_applies(patch, body, names, namespaces):
            continue
        if patch.smp is not None:
            for p, line in patch.smp.lines.items():
                if p and p[0] not in ("apiVersion", "kind") and p[:2] not in (("metadata", "name"), ("metadata", "namespace")):
                    if node.component and isinstance(_at(patch.smp.data, p), dict):
                        continue
                    fields[selector_path(p, patch.smp.data)] = Source(patch.file, line, patch.via, patch.locator)
        for pointer, line in patch.ops:
            ip = pointer_path(pointer)
            if ip and ip[-1] == "-":
                ip = ip[:-1]
            fields[selector_path(ip, body)] = Source(patch.file, line, patch.via, patch.locator)
    _apply_images(node, body, fields)
    name = str((body.get("metadata") or {}).get("name") or "")
    kind = str(body.get("kind") or "")
    for rname, where in node.replicas.items():
        if (rname in names or rname == name) and kind in ("Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"):
            fields[("spec", "replicas")] = where
    for select, paths in node.replacements:
        sel = {str(a): str(b) for a, b in select.items() if isinstance(b, (str, int))} if isinstance(select, dict) else {}
        if not sel or target_matches(sel, body, names, namespaces):
            for fp, where in paths:
                fields[fp] = where


def _at(data: Any, path: tuple[str | int, ...]) -> Any:
    for seg in path:
        if isinstance(seg, int):
            data = data[seg] if isinstance(data, list) and 0 <= seg < len(data) else None
        else:
            data = data.get(seg) if isinstance(data, dict) else None
    return data


def _index_paths(node: Any, path: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], Any]]:
    out: list[tuple[tuple[str | int, ...], Any]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append(((*path, str(k)), v))
            out.extend(_index_paths(v, (*path, str(k))))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append(((*path, i), v))
            out.extend(_index_paths(v, (*path, i)))
    return out


def _patch_applies(patch: PatchSource, body: dict[str, Any], names: set[str], namespaces: set[str]) -> bool:
    if patch.target:
        return target_matches(patch.target, body, names, namespaces)
    if patch.smp is None or not isinstance(patch.smp.data, dict):
        return False
    pm = patch.smp.data.get("metadata") or {}
    return bool(
        patch.smp.data.get("kind") == body.get("kind")
        and str(pm.get("name")) in names
        and (not pm.get("namespace") or str(pm.get("namespace")) in namespaces)
    )


_POD_SPECS: tuple[tuple[str, ...], ...] = (
    ("spec", "template", "spec"),
    ("spec", "jobTemplate", "spec", "template", "spec"),
    ("spec",),
)


def _apply_images(node: KNode, body: dict[str, Any], fields: dict[FieldPath, Source]) -> None:
    if not node.images:
        return
    for base in _POD_SPECS:
        spec: Any = body
        for seg in base:
            spec = spec.get(seg) if isinstance(spec, dict) else None
        if not isinstance(spec, dict):
            continue
        for list_key in ("containers", "initContainers"):
            for c in spec.get(list_key) or []:
                if not isinstance(c, dict):
                    continue
                image = str(c.get("image", ""))
                for entry, where in node.images:
                    wanted = {str(entry.get("name")), str(entry.get("newName") or entry.get("name"))}
                    if any(image == n or image.startswith((n + ":", n + "@")) for n in wanted):
                        fields[(*base, list_key, ("name", str(c.get("name"))), "image")] = where


def generated_name_matches(entry_name: str, rendered: str) -> bool:
    """Does a generator entry named ``entry_name`` produce ``rendered`` (prefix/suffix/hash added)?"""
    base = HASH_SUFFIX.sub("", rendered)
    return entry_name == rendered or entry_name == base or entry_name in base
