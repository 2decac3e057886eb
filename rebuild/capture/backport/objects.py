"""Objects created or deleted live, turned into new manifest files or removed documents.

A created object is written as a clean manifest under the new-objects folder and listed in its
kustomization (and that folder in the root kustomization); a deleted one, with
``include_deletions``, is removed from its file and an emptied file from the kustomizations that
list it. Secrets and anything that cannot be done safely are listed instead.
"""

from __future__ import annotations

import copy
import posixpath
import re
from collections.abc import Mapping
from typing import Any

from rebuild.capture.backport.model import PlannerState, Skip, describe_keys, load_all, who_changed
from rebuild.capture.drift import Finding, strip_server_defaults
from rebuild.capture.yamledit import (
    YamlEditError,
    delete_key,
    dump_clean,
    find_document,
    remove_document,
    set_value,
)
from rebuild.core.model import DesiredObject, Source
from rebuild.desired.kustsource import KUSTOMIZATION_FILES

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


class ObjectEdits(PlannerState):
    """The planner's new and deleted objects."""

    def create(self, f: Finding) -> None:
        if f.secret:
            keys = sorted({*((f.live or {}).get("data") or {}), *((f.live or {}).get("stringData") or {})})
            self.secrets.append(
                f"{f.ref}: created live by {who_changed(f)} with {describe_keys(keys)}; "
                "not written: add it to git encrypted with SOPS"
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
            except (Skip, YamlEditError) as exc:
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
            except (Skip, YamlEditError) as exc:
                self.notes.append(f"add {rel} to the resources of {root} by hand ({_reason(exc)})")
                return
        self.notes.append(
            f"{kpath} is new: add {self.new_dir} to the resources of the kustomization your cluster path builds, "
            "or the captured objects will not be applied"
        )

    # ---- deletions

    def delete(self, f: Finding) -> None:
        if f.helm is not None:  # rendered by a HelmRelease: no document of git declares it
            self.deletions_listed.append((f, f.helm.listing()))
            return
        d = self.desired.get(f.ref)
        src = d.source if d is not None else f.source
        where = f" ({src})" if src else ""
        if not self.include_deletions:
            self.deletions_listed.append((f, f"deleted live, still in git{where}; removed only with --include-deletions"))
            return
        try:
            if d is None or src is None:
                raise Skip("the object is not among the desired objects")
            self.deleted.append((f, self._remove(f, d, src)))
        except (Skip, YamlEditError) as exc:
            self.deletions_listed.append((f, f"deleted live, still in git{where}; not removed: {_reason(exc)}"))

    def _remove(self, f: Finding, d: DesiredObject, src: Source) -> str:
        text = self.texts.get(src.file)
        if text is None:
            raise Skip(f"{src.file} is not a file of the repository (generated by kustomize?)")
        patched = sorted({s.file for s in d.field_sources.values() if s.file != src.file})
        if patched:
            also = f"{', '.join(patched)} also set{'s' if len(patched) == 1 else ''} its fields"
            raise Skip(f"{also}; remove the object and its patches together by hand")
        doc = find_document(text, kind=f.ref.kind, name=f.ref.name, namespace=f.ref.namespace or None)
        if doc is None:
            raise Skip(f"{src.file} does not declare it")
        new = remove_document(text, doc)
        if all(x is None for x in load_all(new)):
            self.texts[src.file] = ""
            self.deleted_files.append(src.file)
            self._unlist(src.file)
            return src.file
        self.texts[src.file] = new
        return str(src)

    def _unlist(self, file: str) -> None:
        for kpath in sorted(self.texts):
            if posixpath.basename(kpath) not in KUSTOMIZATION_FILES:
                continue
            text = self.texts.get(kpath)  # a file that cannot be read is not a kustomization to edit
            if not text:
                continue
            docs = load_all(text)
            res = docs[0].get("resources") if docs and isinstance(docs[0], dict) else None
            if not isinstance(res, list):
                continue
            kdir = posixpath.dirname(kpath)
            for i in reversed(range(len(res))):
                if isinstance(res[i], str) and posixpath.normpath(posixpath.join(kdir, res[i])) == file:
                    text = delete_key(text, 0, ("resources", i))
            self.texts[kpath] = text


def _reason(exc: Exception) -> str:
    return exc.message if isinstance(exc, YamlEditError) else str(exc)


def _add_resources(text: str, entries: list[str]) -> str:
    docs = load_all(text)
    if not docs or not isinstance(docs[0], dict):
        raise Skip("not a kustomization")
    res = docs[0].get("resources")
    if res is None:
        return set_value(text, 0, ("resources",), list(entries)) if entries else text
    if not isinstance(res, list):
        raise Skip("`resources:` is not a list")
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
    return f"# Captured by `rebuild capture`: created live by {who_changed(f)}{when}; it was not in git.\n"
