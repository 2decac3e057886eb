"""Drift findings turned into edits of the files that declare them, plus the pull request text.

Why this exists: a manual change is only safe once git holds it; otherwise the next reconcile or
rebuild erases it. Writing it back by hand means finding which of base manifest, overlay patch or
``kustomization.yaml`` entry produced the field, and re-typing values without breaking the
author's layout. This module does that from a :class:`rebuild.capture.drift.DriftReport`: each finding is
written to the place :meth:`rebuild.core.model.DesiredObject.source_of` names, through
:mod:`rebuild.capture.yamledit`, which changes only the bytes of that value (comments, quoting, key order,
indentation and the other documents stay byte-identical). What cannot be written safely is not
guessed at: it is listed in the pull request with the reason.

Where each finding goes
    changed   the file and document the field's value comes from: the base manifest; the overlay's
              strategic-merge patch when a patch set it (the patch document for that object); the
              ``value`` of the JSON 6902 operation whose ``path`` covers it (an ``add .../-`` append
              only when the live list differs from git in its last item, the appended one); the
              ``images:`` entry of a kustomization (``newTag``, ``newName`` and ``digest`` from the
              live image reference) or its ``replicas:`` entry (``count``). A field present in git
              and gone live is deleted from the base manifest; from a patch it is not (the base value
              would come back), that is listed. A field set by a kustomize transformer (it is not
              written in the file the source names) or an inline patch in ``kustomization.yaml`` is
              listed.
    added     where its nearest declared parent is: :meth:`DesiredObject.source_of` of the new path,
              which is the overlay patch when the overlay declares the parent for this object (so a
              change seen in this cluster stays in this cluster's overlay) and the base manifest
              otherwise. Missing intermediate keys are created.
    created   a clean manifest (:func:`clean_manifest`, :data:`rebuild.capture.drift.SERVER_DEFAULTS`) written to
              ``<new_objects_dir>/<namespace>/<kind>-<name>.yaml`` and added to
              ``<new_objects_dir>/kustomization.yaml``; when that kustomization is new, the folder is
              added to ``root_kustomization`` if given, else the PR says which file must list it.
    deleted   with ``include_deletions``: the document is removed, an emptied file is deleted and
              dropped from every kustomization in ``files`` that lists it. An object an overlay
              patches is not removed (kustomize would fail on the orphaned patch): listed. Without
              ``include_deletions`` every deletion is listed.
    Secrets   values are never written (not to files, the title, body or commit message): the PR
              names the Secret and the keys whose values differ, who changed them, and asks for the
              new value encrypted with SOPS. A created Secret is listed the same way. Other fields of
              a Secret (labels) are edited like any object's, unless the document is SOPS-encrypted
              (any edit would break its MAC), which is listed.

Pure: texts in, texts out. The caller reads ``files`` and writes the result.
"""

from __future__ import annotations

import copy
import difflib
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from rebuild.capture.drift import DriftReport, Finding, parse_image, strip_server_defaults
from rebuild.capture.yamledit import (
    YamlEditError,
    delete_key,
    dump_clean,
    find_document,
    line_of,
    locate,
    remove_document,
    set_value,
)
from rebuild.core.model import DesiredObject, FieldPath, ObjectRef, PathSeg, Source
from rebuild.desired.kustsource import KUSTOMIZATION_FILES, pointer_path, selector_path

__all__ = [
    "Backport",
    "clean_manifest",
    "plan_backport",
]


# --------------------------------------------------------------------------- clean manifests

# Metadata the server or a controller writes; never part of a captured manifest.
_STRIP_META = (
    "managedFields",
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "selfLink",
    "ownerReferences",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
_STRIP_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration", "deployment.kubernetes.io/revision")


def clean_manifest(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A live object as a person would have written it.

    Drops ``status``, server metadata (managedFields, uid, resourceVersion, creationTimestamp,
    generation, selfLink, ownerReferences), the last-applied and revision annotations, and every
    field equal to its server default (:data:`rebuild.capture.drift.SERVER_DEFAULTS`).
    """
    body = copy.deepcopy(dict(obj))
    body.pop("status", None)
    meta = body.get("metadata")
    if isinstance(meta, dict):
        for key in _STRIP_META:
            meta.pop(key, None)
        ann = meta.get("annotations")
        if isinstance(ann, dict):
            for key in _STRIP_ANNOTATIONS:
                ann.pop(key, None)
            if not ann:
                del meta["annotations"]
    strip_server_defaults(body)
    return body


# --------------------------------------------------------------------------- result


@dataclass
class Backport:
    """The files to write and the pull request to open for one drift report.

    ``edits`` maps repo-relative paths of existing files to their new text (only files that change;
    "" for a file to delete, also named in ``deleted_files``); ``new_files`` the files to create.
    ``listed`` has one line per thing the PR reports but does not write (deletions without
    ``include_deletions``, Secret values, findings that cannot be edited safely, with the reason).
    ``branch`` is ``rebuild/capture-<digest>``: the same drift names the same branch.
    """

    edits: dict[str, str] = field(default_factory=dict)
    new_files: dict[str, str] = field(default_factory=dict)
    deleted_files: list[str] = field(default_factory=list)
    listed: list[str] = field(default_factory=list)
    title: str = ""
    body: str = ""
    commit_message: str = ""
    branch: str = ""

    @property
    def empty(self) -> bool:
        return not (self.edits or self.new_files)

    def diff(self, files: Mapping[str, str]) -> str:
        """A unified diff of every change (for ``--dry-run``)."""
        out: list[str] = []
        for path in sorted({*self.edits, *self.new_files}):
            old = files.get(path, "")
            new = self.edits.get(path, self.new_files.get(path, ""))
            a = f"a/{path}" if path in files else "/dev/null"
            b = "/dev/null" if path in self.deleted_files else f"b/{path}"
            out.extend(difflib.unified_diff(old.splitlines(True), new.splitlines(True), a, b))
        return "".join(line if line.endswith("\n") else line + "\n" for line in out)


class _Skip(Exception):
    """A finding that cannot be written safely; the message is the reason shown in the PR."""


@dataclass
class _Where:
    """How to find an edited value again at the end (lines move when other edits land).

    ``doc`` is the document index; ``-N`` means "line N of a plain text file" (an env file)
    and ``-1`` a whole file."""

    file: str
    path: FieldPath
    ref: ObjectRef | None  # the object whose document holds it (None: use ``doc``)
    doc: int = 0


@dataclass
class _Row:
    finding: Finding
    where: _Where | None = None
    reason: str | None = None  # set when not edited


def _load_all(text: str) -> list[Any]:
    try:
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise _Skip(f"not valid YAML: {' '.join(str(exc).split())}") from exc


def _strip_default_protocol(path: FieldPath) -> FieldPath:
    """``ports[containerPort,protocol=8080,TCP]`` -> ``ports[containerPort=8080]`` (files rarely write TCP)."""
    out: list[PathSeg] = []
    for seg in path:
        if isinstance(seg, tuple) and "," in seg[0]:
            pairs = [(k, v) for k, v in zip(seg[0].split(","), seg[1].split(","), strict=False) if (k, v) != ("protocol", "TCP")]
            seg = (",".join(k for k, _ in pairs), ",".join(v for _, v in pairs)) if pairs else seg
        out.append(seg)
    return tuple(out)


# --------------------------------------------------------------------------- planner


class _Planner:
    def __init__(
        self,
        report: DriftReport,
        desired: Mapping[ObjectRef, DesiredObject],
        files: Mapping[str, str],
        new_objects_dir: str,
        include_deletions: bool,
        root_kustomization: str | None,
    ) -> None:
        self.report = report
        self.desired = desired
        self.files = files
        self.texts: dict[str, str] = dict(files)
        self.new_dir = posixpath.normpath(new_objects_dir.strip("/")) if new_objects_dir.strip("/") else "."
        self.include_deletions = include_deletions
        self.root_kustomization = root_kustomization
        self.rows: list[_Row] = []
        self.secrets: list[str] = []
        self.created: list[tuple[Finding, str]] = []
        self.created_listed: list[tuple[Finding, str]] = []
        self.deleted: list[tuple[Finding, str]] = []
        self.deletions_listed: list[tuple[Finding, str]] = []
        self.notes: list[str] = []
        self.new_files: dict[str, str] = {}
        self.deleted_files: list[str] = []
        # The source path when it has no kustomization: Flux's generated kustomization includes
        # every folder below it that holds one, so a new folder there needs no resources entry.
        self.generated_root: str | None = None

    # ---- fields

    def edit(self, f: Finding) -> None:
        row = _Row(f)
        self.rows.append(row)
        if f.secret_value:
            return  # collected per Secret in secret_rows()
        try:
            row.where = self._edit_field(f)
        except _Skip as exc:
            row.reason = str(exc)
        except YamlEditError as exc:
            row.reason = exc.message

    def _edit_field(self, f: Finding) -> _Where:
        assert f.path is not None
        d = self.desired.get(f.ref)
        if d is None:
            raise _Skip("the object is not among the desired objects")
        src = f.source or d.source_of(f.path)
        if not src.editable_in_place:
            if f.kind == "added" and d.declared is not None:
                # The nearest declared parent is written by a transformer for many objects: a
                # field one object gained belongs in that object's own manifest.
                return self._edit_declared(f, d, d.declared.file)
            raise _Skip(_not_editable(src))
        if src.via == "inline-patch":
            return self._edit_inline_patch(f, d, src)
        if src.via == "image":
            return self._edit_image(f, src)
        if src.via == "replicas":
            return self._edit_replicas(f, src)
        if src.via in ("literal", "generator"):
            return self._edit_literal(f, src)
        if src.via == "env":
            return self._edit_env(f, src)
        if src.via == "file":
            return self._edit_file(f, src)
        if src.file not in self.texts:
            raise _Skip(f"{src.file} is not a file of the repository")
        if d.declared is not None and src.file == d.declared.file:
            return self._edit_declared(f, d, src.file)
        return self._edit_patch_file(f, d, src)

    def _edit_declared(self, f: Finding, d: DesiredObject, file: str) -> _Where:
        """Edit the object's own document (``declared``); a List item sits under its prefix."""
        assert f.path is not None and d.declared is not None
        text = self.texts.get(file)
        if text is None:
            raise _Skip(f"{file} is not a file of the repository")
        doc, prefix = d.declared.doc, d.declared.prefix
        data = _doc_at(_load_all(text), doc)
        if isinstance(data, dict) and "sops" in data:
            raise _Skip(f"{file} is encrypted with SOPS: edit it with `sops {file}`")
        path = self._path_in_file(text, doc, f, prefix)
        if f.kind == "changed" and f.live is None:
            self.texts[file] = delete_key(text, doc, path)
            return _Where(file, path[:-1], None, doc)
        self.texts[file] = set_value(text, doc, path, f.live)
        return _Where(file, path, None, doc)

    def _edit_patch_file(self, f: Finding, d: DesiredObject, src: Source) -> _Where:
        """A strategic-merge patch document for the object, or a JSON 6902 patch file."""
        assert f.path is not None
        text = self.texts[src.file]
        names = [d.declared.name] if d.declared is not None else []
        doc = _patch_document(text, f.ref.kind, [*names, f.ref.name], f.ref.namespace)
        if doc is None:
            return self._edit_json6902(f, d, src, text)
        path = self._path_in_file(text, doc, f)
        if f.kind == "changed" and f.live is None:
            raise _Skip(f"the field is gone live but removing it from the patch {src.file} would bring back the base value")
        self.texts[src.file] = set_value(text, doc, path, f.live)
        return _Where(src.file, path, None, doc)

    def _edit_inline_patch(self, f: Finding, d: DesiredObject, src: Source) -> _Where:
        """A patch written inline in a kustomization (or a Flux Kustomization): edit inside its block
        scalar; yamledit rewrites the scalar's lines in its own style and indentation."""
        assert f.path is not None
        kdoc, scalar_path, inner = src.locator
        text = self.texts.get(src.file)
        if text is None:
            raise _Skip(f"{src.file} is not a file of the repository")
        scalar: Any = _doc_at(_load_all(text), kdoc)
        for seg in scalar_path:
            scalar = scalar[seg] if isinstance(scalar, (dict, list)) else None
        if not isinstance(scalar, str):
            raise _Skip(f"the inline patch at {src} is not a string")
        inner_docs = _load_all(scalar)
        if inner < len(inner_docs) and isinstance(inner_docs[inner], list):
            sub = _Planner(self.report, self.desired, {"(patch)": scalar}, ".", False, None)
            sub._edit_json6902(f, d, Source("(patch)", 1), scalar)
            new_scalar = sub.texts["(patch)"]
        else:
            path = self._path_in_file(scalar, inner, f)
            if f.kind == "changed" and f.live is None:
                raise _Skip(f"the field is gone live but removing it from the patch at {src} would bring back the base value")
            new_scalar = set_value(scalar, inner, path, f.live)
        self.texts[src.file] = set_value(text, kdoc, tuple(scalar_path), new_scalar)
        return _Where(src.file, tuple(scalar_path), None, kdoc)

    @staticmethod
    def _path_in_file(text: str, doc: int, f: Finding, prefix: tuple[str | int, ...] = ()) -> FieldPath:
        assert f.path is not None
        candidates: list[FieldPath] = [(*prefix, *f.path)]
        stripped = _strip_default_protocol(f.path)
        if stripped != f.path:
            candidates.append((*prefix, *stripped))
        if f.kind == "changed":
            for p in candidates:
                if locate(text, doc, p) is not None:
                    return p
            raise _Skip("the field is not written in the file its source names (set by a kustomize transformer?)")
        for p in candidates:  # added: the parent must be where the file has it
            if len(p) <= 1 or locate(text, doc, p[:-1]) is not None:
                return p
        return candidates[-1]

    def _edit_replicas(self, f: Finding, src: Source) -> _Where:
        kdoc, entry = src.locator
        if f.kind != "changed" or f.live is None:
            raise _Skip(f"the field is gone live; remove its `replicas:` entry at {src} by hand")
        if not isinstance(f.live, int) or isinstance(f.live, bool):
            raise _Skip(f"replicas {f.live!r} is not a number")
        self.texts[src.file] = set_value(self.texts[src.file], kdoc, (*entry, "count"), f.live)
        return _Where(src.file, (*entry, "count"), None, kdoc)

    def _edit_image(self, f: Finding, src: Source) -> _Where:
        """An ``images:`` entry (a kustomization's, or a Flux Kustomization's ``spec.images``)."""
        kdoc, entry_path = src.locator
        if f.kind != "changed" or not isinstance(f.live, str):
            raise _Skip(f"the image is gone live; remove its `images:` entry at {src} by hand")
        text = self.texts[src.file]
        entry: Any = _doc_at(_load_all(text), kdoc)
        for seg in entry_path:
            entry = entry[seg] if isinstance(entry, (dict, list)) else None
        if not isinstance(entry, dict):
            raise _Skip(f"no `images:` entry at {src}")
        name, tag, digest = parse_image(f.live)
        if tag is None and digest is None:
            raise _Skip(f"the live image {f.live} has neither tag nor digest")
        if name != (entry.get("newName") or entry.get("name")):
            text = set_value(text, kdoc, (*entry_path, "newName"), name)
        if tag is not None:
            text = set_value(text, kdoc, (*entry_path, "newTag"), tag)
        elif "newTag" in entry:
            text = delete_key(text, kdoc, (*entry_path, "newTag"))
        if digest is not None:
            text = set_value(text, kdoc, (*entry_path, "digest"), digest)
        elif "digest" in entry:
            text = delete_key(text, kdoc, (*entry_path, "digest"))
        self.texts[src.file] = text
        return _Where(src.file, tuple(entry_path), None, kdoc)

    def _edit_literal(self, f: Finding, src: Source) -> _Where:
        """A generator's ``KEY=value`` literal; a key added live becomes a new literal of the entry."""
        assert f.path is not None
        if len(f.path) != 2 or f.path[0] != "data" or not isinstance(f.path[1], str):
            raise _Skip(f"only data keys of a generated object can be written to its generator ({src})")
        key = f.path[1]
        kdoc, where = src.locator
        text = self.texts[src.file]
        if src.via == "literal":
            if f.live is None:
                self.texts[src.file] = delete_key(text, kdoc, tuple(where))
                return _Where(src.file, tuple(where[:-1]), None, kdoc)
            self.texts[src.file] = set_value(text, kdoc, tuple(where), f"{key}={_text(f.live)}")
            return _Where(src.file, tuple(where), None, kdoc)
        entry: Any = _doc_at(_load_all(text), kdoc)
        for seg in where:
            entry = entry[seg] if isinstance(entry, (dict, list)) else None
        literals = entry.get("literals") if isinstance(entry, dict) else None
        n = len(literals) if isinstance(literals, list) else 0
        target: FieldPath = (*where, "literals", n) if n else (*where, "literals")
        value: Any = f"{key}={_text(f.live)}" if n else [f"{key}={_text(f.live)}"]
        self.texts[src.file] = set_value(text, kdoc, target, value)
        return _Where(src.file, (*where, "literals", n), None, kdoc)

    def _edit_env(self, f: Finding, src: Source) -> _Where:
        """A ``KEY=value`` line of a generator's env file (plain text, not YAML)."""
        text = self.texts.get(src.file)
        if text is None:
            raise _Skip(f"{src.file} is not a file of the repository")
        lines = text.splitlines(True)
        i = src.line - 1
        if not 0 <= i < len(lines) or "=" not in lines[i]:
            raise _Skip(f"{src} is not a KEY=value line")
        head, _, rest = lines[i].partition("=")
        end = rest[len(rest.rstrip("\r\n")) :]
        if f.live is None:
            del lines[i]
        else:
            lines[i] = f"{head}={_text(f.live)}{end}"
        self.texts[src.file] = "".join(lines)
        return _Where(src.file, (), None, -src.line)

    def _edit_file(self, f: Finding, src: Source) -> _Where:
        if not isinstance(f.live, str):
            raise _Skip(f"the live value of {f.rendered} is not text")
        self.texts[src.file] = f.live
        return _Where(src.file, (), None, -1)

    def _edit_json6902(self, f: Finding, d: DesiredObject, src: Source, text: str) -> _Where:
        assert f.path is not None
        docs = _load_all(text)
        if len(docs) != 1 or not isinstance(docs[0], list):
            raise _Skip(f"{src.file} neither declares {f.ref} nor is a JSON 6902 patch")
        best: tuple[int, FieldPath, bool] | None = None
        for i, op in enumerate(docs[0]):
            if not isinstance(op, dict) or op.get("op") not in ("add", "replace") or not isinstance(op.get("path"), str):
                continue
            ip = pointer_path(op["path"])
            append = bool(ip) and ip[-1] == "-"
            fp = selector_path(ip[:-1] if append else ip, d.body)
            if f.path[: len(fp)] == fp and (best is None or len(fp) > len(best[1])):
                best = (i, fp, append)
        if best is None:
            raise _Skip(f"no operation in the JSON 6902 patch {src.file} sets this field")
        i, fp, append = best
        rest = f.path[len(fp) :]
        if append:
            g, lv = f.git, f.live
            ok = not rest and isinstance(g, list) and isinstance(lv, list) and len(g) == len(lv) and g[:-1] == lv[:-1]
            if not ok:
                raise _Skip(f"the list is the base's plus an `add .../-` in {src.file}; edit both by hand")
            assert isinstance(lv, list)
            target: FieldPath = (i, "value")
            self.texts[src.file] = set_value(text, 0, target, lv[-1])
            return _Where(src.file, target, None)
        target = (i, "value", *rest)
        if f.kind == "changed" and f.live is None:
            if not rest:
                raise _Skip(f"the field is gone live; remove the operation from {src.file} by hand")
            self.texts[src.file] = delete_key(text, 0, target)
            return _Where(src.file, target[:-1], None)
        self.texts[src.file] = set_value(text, 0, target, f.live)
        return _Where(src.file, target, None)

    # ---- secrets

    def secret_rows(self) -> None:
        per: dict[ObjectRef, list[Finding]] = {}
        for row in self.rows:
            if row.finding.secret_value:
                per.setdefault(row.finding.ref, []).append(row.finding)
                row.reason = "Secret value: not copied (see Secrets)"
        for ref, found in sorted(per.items()):
            keys = sorted({str(f.path[1]) for f in found if f.path and len(f.path) > 1})
            who = sorted({_who(f) for f in found})
            where = found[0].source.file if found[0].source else "git"
            self.secrets.append(
                f"{ref}: the value of {_keys(keys)} differs live (changed by {', '.join(who)}); values are not copied: "
                f"encrypt the live value with SOPS and update {where}"
            )

    # ---- created objects

    def create(self, f: Finding) -> None:
        if f.secret:
            keys = sorted({*((f.live or {}).get("data") or {}), *((f.live or {}).get("stringData") or {})})
            self.secrets.append(
                f"{f.ref}: created live by {_who(f)} with {_keys(keys)}; not written: add it to git encrypted with SOPS"
            )
            self.created_listed.append((f, "Secret: values are never written"))
            return
        if not isinstance(f.live, dict):
            self.created_listed.append((f, "the live object was not captured"))
            return
        try:
            body = clean_manifest(f.live)
            text = _header(f) + dump_clean(body)
        except YamlEditError as exc:
            self.created_listed.append((f, exc.message))
            return
        ns = f.ref.namespace or "_cluster"
        name = re.sub(r"[^A-Za-z0-9._-]", "_", f.ref.name)
        path = posixpath.join(self.new_dir, ns, f"{f.ref.kind.lower()}-{name}.yaml")
        if path in self.texts:
            self.texts[path] = text
        else:
            self.new_files[path] = text
        self.created.append((f, path))

    def kustomize_created(self) -> None:
        if not self.created:
            return
        entries = [posixpath.relpath(p, self.new_dir) for _, p in self.created]
        kpath = next(
            (posixpath.join(self.new_dir, n) for n in KUSTOMIZATION_FILES if posixpath.join(self.new_dir, n) in self.texts), None
        )
        if kpath is not None:
            try:
                self.texts[kpath] = _add_resources(self.texts[kpath], entries)
            except (_Skip, YamlEditError) as exc:
                self.notes.append(f"add {', '.join(entries)} to the resources of {kpath} by hand ({_reason(exc)})")
            return
        kpath = posixpath.join(self.new_dir, "kustomization.yaml")
        kust = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": sorted(entries)}
        self.new_files[kpath] = "# Objects created live and captured by `rebuild capture`.\n" + dump_clean(kust)
        if self.generated_root is not None:
            base = posixpath.normpath(self.generated_root.strip("/") or ".")
            if base == "." or self.new_dir == base or self.new_dir.startswith(base + "/"):
                return
        root = self.root_kustomization
        if root is not None and root in self.texts:
            rel = posixpath.relpath(self.new_dir, posixpath.dirname(root) or ".")
            try:
                self.texts[root] = _add_resources(self.texts[root], [rel])
                return
            except (_Skip, YamlEditError) as exc:
                self.notes.append(f"add {rel} to the resources of {root} by hand ({_reason(exc)})")
                return
        self.notes.append(
            f"{kpath} is new: add {self.new_dir} to the resources of the kustomization your cluster path builds, "
            "or the captured objects will not be applied"
        )

    # ---- deletions

    def delete(self, f: Finding) -> None:
        d = self.desired.get(f.ref)
        src = d.source if d is not None else f.source
        where = f" ({src})" if src else ""
        if not self.include_deletions:
            self.deletions_listed.append((f, f"deleted live, still in git{where}; removed only with --include-deletions"))
            return
        try:
            if d is None or src is None:
                raise _Skip("the object is not among the desired objects")
            self.deleted.append((f, self._remove(f, d, src)))
        except (_Skip, YamlEditError) as exc:
            self.deletions_listed.append((f, f"deleted live, still in git{where}; not removed: {_reason(exc)}"))

    def _remove(self, f: Finding, d: DesiredObject, src: Source) -> str:
        text = self.texts.get(src.file)
        if text is None:
            raise _Skip(f"{src.file} is not a file of the repository (generated by kustomize?)")
        patched = sorted({s.file for s in d.field_sources.values() if s.file != src.file})
        if patched:
            also = f"{', '.join(patched)} also set{'s' if len(patched) == 1 else ''} its fields"
            raise _Skip(f"{also}; remove the object and its patches together by hand")
        doc = find_document(text, kind=f.ref.kind, name=f.ref.name, namespace=f.ref.namespace or None)
        if doc is None:
            raise _Skip(f"{src.file} does not declare it")
        new = remove_document(text, doc)
        if all(x is None for x in _load_all(new)):
            self.texts[src.file] = ""
            self.deleted_files.append(src.file)
            self._unlist(src.file)
            return src.file
        self.texts[src.file] = new
        return str(src)

    def _unlist(self, file: str) -> None:
        for kpath in sorted(self.texts):
            if posixpath.basename(kpath) not in KUSTOMIZATION_FILES or not self.texts[kpath]:
                continue
            text = self.texts[kpath]
            docs = _load_all(text)
            res = docs[0].get("resources") if docs and isinstance(docs[0], dict) else None
            if not isinstance(res, list):
                continue
            kdir = posixpath.dirname(kpath)
            for i in reversed(range(len(res))):
                if isinstance(res[i], str) and posixpath.normpath(posixpath.join(kdir, res[i])) == file:
                    text = delete_key(text, 0, ("resources", i))
            self.texts[kpath] = text

    # ---- locations after every edit

    def location(self, where: _Where) -> str:
        text = self.texts.get(where.file, "")
        if where.file in self.deleted_files or not text:
            return where.file
        if where.doc < 0:
            return f"{where.file}:{-where.doc}" if where.doc < -1 else where.file
        try:
            doc = where.doc
            if where.ref is not None:
                found = find_document(text, kind=where.ref.kind, name=where.ref.name, namespace=where.ref.namespace or None)
                if found is None:
                    return where.file
                doc = found
            line = line_of(text, doc, where.path)
        except YamlEditError:
            line = None
        return f"{where.file}:{line}" if line else where.file


def _patch_document(text: str, kind: str, names: list[str], namespace: str) -> int | None:
    """The document of a patch file that patches ``kind``/``name`` (a patch names the object as
    its base declares it; its namespace may be left out, or be the final one)."""
    hits: list[int] = []
    for i, d in enumerate(_load_all(text)):
        meta = d.get("metadata") if isinstance(d, dict) else None
        if not isinstance(meta, dict) or d.get("kind") != kind or str(meta.get("name") or "") not in names:
            continue
        if meta.get("namespace") and str(meta["namespace"]) != namespace:
            continue
        hits.append(i)
    return hits[0] if len(hits) == 1 else None


def _doc_at(docs: list[Any], i: int) -> Any:
    return docs[i] if 0 <= i < len(docs) else None


def _text(value: Any) -> str:
    """A value as a generator literal or env line holds it (ConfigMap data is always text)."""
    return value if isinstance(value, str) else str(value)


def _not_editable(src: Source) -> str:
    """Why a value cannot be written where it lands, with the line that sets it."""
    if src.via == "transformer":
        return (
            f"set by a transformer at {src} for every object that kustomization builds; "
            "change it there if all of them should change, or add a patch for this object"
        )
    if src.via == "replacement":
        return f"computed by a replacement at {src}: change the field it copies from"
    if src.via == "substitute":
        names = ", ".join("${" + str(n) + "}" for n in src.locator[2:])
        return f"comes from the Flux variable {names} (defined at {src}); the manifest line is {src.locator[0]}:{src.locator[1]}"
    if src.via == "remote":
        what = src.locator[0] if src.locator else "a remote base"
        return f"comes from the remote base {what} (listed at {src}), which this repository does not hold"
    return f"set at {src}"


def _reason(exc: Exception) -> str:
    return exc.message if isinstance(exc, YamlEditError) else str(exc)


def _add_resources(text: str, entries: list[str]) -> str:
    docs = _load_all(text)
    if not docs or not isinstance(docs[0], dict):
        raise _Skip("not a kustomization")
    res = docs[0].get("resources")
    if res is None:
        return set_value(text, 0, ("resources",), list(entries)) if entries else text
    if not isinstance(res, list):
        raise _Skip("`resources:` is not a list")
    have = [posixpath.normpath(r) for r in res if isinstance(r, str)]
    n = len(res)
    for e in entries:
        if posixpath.normpath(e) in have:
            continue
        text = set_value(text, 0, ("resources", n), e)
        have.append(posixpath.normpath(e))
        n += 1
    return text


def _header(f: Finding) -> str:
    when = f" at {f.time}" if f.time else ""
    return f"# Captured by `rebuild capture`: created live by {_who(f)}{when}; it was not in git.\n"


def _by(f: Finding) -> str:
    """``by kubectl-edit at 2026-11-26T11:05:17Z`` (the manager alone: the commit is one line per change)."""
    return f"by {f.manager or 'an unknown client'}" + (f" at {f.time}" if f.time else "")


def _who(f: Finding) -> str:
    return f.changed_by()


def _keys(keys: list[str]) -> str:
    if not keys:
        return "no keys"
    return ("key " if len(keys) == 1 else "keys ") + ", ".join(keys)


# --------------------------------------------------------------------------- text of the PR


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")


def _code(text: str) -> str:
    return f"`{_cell(text)}`"


def _title(report: DriftReport) -> str:
    n = len(report.findings)
    if n == 0:
        return "rebuild capture: no manual changes"
    counts: dict[str, int] = {}
    for f in report.findings:
        ns = f.ref.namespace or "cluster-scoped"
        counts[ns] = counts.get(ns, 0) + 1
    namespaces = sorted(counts, key=lambda ns: (-counts[ns], ns))
    return f"rebuild capture: {n} manual change{'s' if n != 1 else ''} in {', '.join(namespaces)}"


def _body(p: _Planner, backport: Backport) -> str:
    report = p.report
    out: list[str] = [
        "Changes made directly in the cluster, found by `rebuild capture` and written back to the files that declare them,",
        "so the next reconcile or rebuild keeps them. Review each one: merge what should stay, revert the rest in the cluster.",
        "",
    ]
    if p.rows:
        out += ["| object | field | git → live | changed by | when | file:line |", "|---|---|---|---|---|---|"]
        for row in p.rows:
            f = row.finding
            if f.secret_value:
                change = "secret value differs (not shown)"
            else:
                g, lv = f.values()
                change = f"{_code(g)} → {_code(lv)}"
            if row.where is not None:
                loc = _code(p.location(row.where))
            else:
                loc = (_code(str(f.source)) if f.source else "") + " (not edited, see below)"
            who = _cell(f.changed_by())
            out.append(f"| {_cell(str(f.ref))} | {_code(f.rendered or '')} | {change} | {who} | {f.time or ''} | {loc} |")
        out.append("")
    if p.created or p.created_listed:
        out += ["### New objects", "", "| object | created by | when | file |", "|---|---|---|---|"]
        for f, path in p.created:
            out.append(f"| {_cell(str(f.ref))} | {_cell(f.changed_by())} | {f.time or ''} | {_code(path)} |")
        for f, why in p.created_listed:
            out.append(f"| {_cell(str(f.ref))} | {_cell(f.changed_by())} | {f.time or ''} | not written: {_cell(why)} |")
        out.append("")
    if p.deleted or p.deletions_listed:
        out += ["### Deletions", ""]
        out += [f"- {f.ref}: deleted live; removed from `{where}`" for f, where in p.deleted]
        out += [f"- {f.ref}: {why}" for f, why in p.deletions_listed]
        out.append("")
    if p.secrets:
        out += ["### Secrets", "", "Secret values are never written to git, this PR or its logs.", ""]
        out += [f"- {s}" for s in p.secrets]
        out.append("")
    not_edited = [r for r in p.rows if r.reason is not None and not r.finding.secret_value]
    if not_edited:
        out += ["### Not edited", "", "Written to no file because it cannot be done safely; edit by hand:", ""]
        out += [f"- {r.finding.ref} `{r.finding.rendered}`: {r.reason}" for r in not_edited]
        out.append("")
    if p.notes:
        out += ["### To do by hand", ""]
        out += [f"- {n}" for n in p.notes]
        out.append("")
    edited = sum(1 for r in p.rows if r.where is not None)
    files = len([k for k in backport.edits if k not in backport.deleted_files])
    out += [
        "### Summary",
        "",
        f"- {report.coverage.summary()}",
        f"- {edited} field{'s' if edited != 1 else ''} edited in {files} file{'s' if files != 1 else ''}, "
        f"{len(p.created)} new object file{'s' if len(p.created) != 1 else ''}, {len(backport.deleted_files)} file"
        f"{'s' if len(backport.deleted_files) != 1 else ''} deleted, {len(backport.listed)} item"
        f"{'s' if len(backport.listed) != 1 else ''} listed for a person",
        f"- Controller and reconciler changes left out as noise: {len(report.noise)} (see `rebuild capture -o json`)",
        f"- Drift digest: `{report.digest()}`",
        "",
    ]
    return "\n".join(out)


def _commit_message(p: _Planner, title: str) -> str:
    lines = [title, ""]
    for row in p.rows:
        f = row.finding
        if f.secret_value or row.where is None:
            continue
        g, lv = f.values()
        lines.append(f"- {f.ref} {f.rendered}: {g} -> {lv} ({_by(f)}; {p.location(row.where)})")
    for f, path in p.created:
        lines.append(f"- {f.ref}: new file {path} (created {_by(f)})")
    for f, where in p.deleted:
        lines.append(f"- {f.ref}: removed from {where} (deleted live)")
    return "\n".join(lines) + f"\n\nrebuild-capture-digest: {p.report.digest()}\n"


# --------------------------------------------------------------------------- entry point


def plan_backport(
    report: DriftReport,
    desired: Mapping[ObjectRef, DesiredObject],
    files: Mapping[str, str],
    *,
    new_objects_dir: str,
    include_deletions: bool,
    root_kustomization: str | None = None,
    generated_root: str | None = None,
) -> Backport:
    """Plan the edits and the PR for the reported (human) findings of ``report``.

    ``files`` maps repo-relative paths to their current text (every file the desired objects'
    sources name, every kustomization, and ``<new_objects_dir>/kustomization.yaml`` if it exists);
    ``root_kustomization`` is the kustomization the cluster path builds, used to include a newly
    created ``new_objects_dir``. Never raises for a finding it cannot write: that is listed.
    """
    p = _Planner(report, desired, files, new_objects_dir, include_deletions, root_kustomization)
    p.generated_root = generated_root
    for f in report.findings:
        if f.kind in ("changed", "added"):
            p.edit(f)
    p.secret_rows()
    for f in report.findings:
        if f.kind == "created":
            p.create(f)
    p.kustomize_created()
    for f in report.findings:
        if f.kind == "deleted":
            p.delete(f)

    listed: list[str] = []
    listed += [f"{f.ref}: {why}" for f, why in p.deletions_listed]
    listed += p.secrets
    listed += [
        f"{r.finding.ref} {r.finding.rendered}: not edited: {r.reason}" for r in p.rows if r.reason and not r.finding.secret_value
    ]
    listed += [f"{f.ref}: not written: {why}" for f, why in p.created_listed if not f.secret]
    listed += p.notes

    edits = {k: v for k, v in sorted(p.texts.items()) if k in files and v != files[k]}
    backport = Backport(
        edits=edits,
        new_files=dict(sorted(p.new_files.items())),
        deleted_files=sorted(p.deleted_files),
        listed=listed,
        branch=f"rebuild/capture-{report.digest()}",
    )
    backport.title = _title(report)
    backport.body = _body(p, backport)
    backport.commit_message = _commit_message(p, backport.title)
    return backport
