"""Drifted fields written back into the files that declare them.

Each changed or added field is written where :meth:`rebuild.core.model.DesiredObject.source_of`
says its value comes from: the object's own document, a strategic-merge or JSON 6902 patch, an
inline patch, a kustomization's ``images:``/``replicas:`` entry, a generator's literal or env
file. What cannot be written safely raises :class:`Skip` and is listed with the reason; Secret
values are never written, only named (:meth:`FieldEdits.secret_rows`).
"""

from __future__ import annotations

from typing import Any

from rebuild.adapters.sops import is_sops_document
from rebuild.capture.backport.model import PlannerState, Row, Skip, Where, describe_keys, load_all, who_changed
from rebuild.capture.backport.sops import NotWritable, SecretChange, SopsSecrets
from rebuild.capture.drift import CHANGE_THE_CHART, Finding, parse_image
from rebuild.capture.yamledit import (
    YamlEditError,
    delete_key,
    locate,
    set_value,
)
from rebuild.core.model import DesiredObject, FieldPath, ObjectRef, PathSeg, Source
from rebuild.desired.kustsource import pointer_path, selector_path


def _strip_default_protocol(path: FieldPath) -> FieldPath:
    """``ports[containerPort,protocol=8080,TCP]`` -> ``ports[containerPort=8080]`` (files rarely write TCP)."""
    out: list[PathSeg] = []
    for seg in path:
        if isinstance(seg, tuple) and "," in seg[0]:
            pairs = [(k, v) for k, v in zip(seg[0].split(","), seg[1].split(","), strict=False) if (k, v) != ("protocol", "TCP")]
            seg = (",".join(k for k, _ in pairs), ",".join(v for _, v in pairs)) if pairs else seg
        out.append(seg)
    return tuple(out)


class FieldEdits(PlannerState):
    """The planner's field edits: one :class:`Row` per changed or added finding."""

    # Writes Secret values into SOPS-encrypted files (the one part that runs sops; given by the
    # caller, None in a plan without it: such values are then listed, as without a rule).
    sops: SopsSecrets | None = None

    def edit(self, f: Finding) -> None:
        row = Row(f)
        self.rows.append(row)
        if f.secret_value:
            return  # collected per Secret in secret_rows()
        try:
            row.where = self._edit_helm(f) if f.helm is not None else self._edit_field(f)
        except Skip as exc:
            row.reason = str(exc)
        except YamlEditError as exc:
            row.reason = exc.message

    def _edit_helm(self, f: Finding) -> Where:
        """A field of an object a HelmRelease rendered: the ``spec.values`` leaves the chart renders
        it from (:mod:`rebuild.capture.helm.values`), edited like any field of the HelmRelease
        (its own document, or the overlay patch that sets the value); otherwise listed."""
        origin = f.helm
        assert origin is not None
        if not origin.edits:
            raise Skip(origin.listing())
        hr = self.desired.get(origin.release)
        if hr is None:
            raise Skip(f"{origin.name} is not among the desired objects of this source; {CHANGE_THE_CHART}")
        before = self.texts.copy()
        wheres: list[Where] = []
        for e in origin.edits:
            leaf = Finding(
                "changed", hr.ref, hr.api_version, e.field_path, e.git, e.live,
                f.manager, f.operation, f.subresource, f.time, e.source, f.klass, f.owners,
            )  # fmt: skip
            try:
                wheres.append(self._edit_field(leaf))
            except (Skip, YamlEditError) as exc:
                self.texts = before  # all of the values or none
                why = exc.message if isinstance(exc, YamlEditError) else str(exc)
                raise Skip(f"{origin.name} ({origin.source}): {e.rendered}: {why}; {CHANGE_THE_CHART}") from exc
        return wheres[0]

    def _edit_field(self, f: Finding) -> Where:
        assert f.path is not None
        d = self.desired.get(f.ref)
        if d is None:
            raise Skip("the object is not among the desired objects")
        src = f.source or d.source_of(f.path)
        if not src.editable_in_place:
            if f.kind == "added" and d.declared is not None:
                # The nearest declared parent is written by a transformer for many objects: a
                # field one object gained belongs in that object's own manifest.
                return self._edit_declared(f, d, d.declared.file)
            raise Skip(_not_editable(src))
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
            raise Skip(f"{src.file} is not a file of the repository")
        if d.declared is not None and src.file == d.declared.file:
            return self._edit_declared(f, d, src.file)
        return self._edit_patch_file(f, d, src)

    def _edit_declared(self, f: Finding, d: DesiredObject, file: str) -> Where:
        """Edit the object's own document (``declared``); a List item sits under its prefix."""
        assert f.path is not None and d.declared is not None
        text = self.texts.get(file)
        if text is None:
            raise Skip(f"{file} is not a file of the repository")
        doc, prefix = d.declared.doc, d.declared.prefix
        data = _doc_at(load_all(text), doc)
        if is_sops_document(data):
            raise Skip(f"{file} is encrypted with SOPS: edit it with `sops {file}`")
        path = self._path_in_file(text, doc, f, prefix)
        if f.kind == "changed" and f.live is None:
            self.texts[file] = delete_key(text, doc, path)
            return Where(file, path[:-1], None, doc)
        self.texts[file] = set_value(text, doc, path, f.live)
        return Where(file, path, None, doc)

    def _edit_patch_file(self, f: Finding, d: DesiredObject, src: Source) -> Where:
        """A strategic-merge patch document for the object, or a JSON 6902 patch file."""
        assert f.path is not None
        text = self.texts[src.file]
        names = [d.declared.name] if d.declared is not None else []
        doc = _patch_document(text, f.ref.kind, [*names, f.ref.name], f.ref.namespace)
        if doc is None:
            return self._edit_json6902(f, d, src, text)
        path = self._path_in_file(text, doc, f)
        if f.kind == "changed" and f.live is None:
            raise Skip(f"the field is gone live but removing it from the patch {src.file} would bring back the base value")
        self.texts[src.file] = set_value(text, doc, path, f.live)
        return Where(src.file, path, None, doc)

    def _edit_inline_patch(self, f: Finding, d: DesiredObject, src: Source) -> Where:
        """A patch written inline in a kustomization (or a Flux Kustomization): edit inside its block
        scalar; yamledit rewrites the scalar's lines in its own style and indentation."""
        assert f.path is not None
        kdoc, scalar_path, inner = src.locator
        text = self.texts.get(src.file)
        if text is None:
            raise Skip(f"{src.file} is not a file of the repository")
        scalar: Any = _doc_at(load_all(text), kdoc)
        for seg in scalar_path:
            scalar = scalar[seg] if isinstance(scalar, (dict, list)) else None
        if not isinstance(scalar, str):
            raise Skip(f"the inline patch at {src} is not a string")
        inner_docs = load_all(scalar)
        if inner < len(inner_docs) and isinstance(inner_docs[inner], list):
            sub = FieldEdits(self.report, self.desired, {"(patch)": scalar}, ".", False, None)
            sub._edit_json6902(f, d, Source("(patch)", 1), scalar)
            new_scalar = sub.texts["(patch)"]
        else:
            path = self._path_in_file(scalar, inner, f)
            if f.kind == "changed" and f.live is None:
                raise Skip(f"the field is gone live but removing it from the patch at {src} would bring back the base value")
            new_scalar = set_value(scalar, inner, path, f.live)
        self.texts[src.file] = set_value(text, kdoc, tuple(scalar_path), new_scalar)
        return Where(src.file, tuple(scalar_path), None, kdoc)

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
            raise Skip("the field is not written in the file its source names (set by a kustomize transformer?)")
        for p in candidates:  # added: the parent must be where the file has it
            if len(p) <= 1 or locate(text, doc, p[:-1]) is not None:
                return p
        return candidates[-1]

    def _edit_replicas(self, f: Finding, src: Source) -> Where:
        kdoc, entry = src.locator
        if f.kind != "changed" or f.live is None:
            raise Skip(f"the field is gone live; remove its `replicas:` entry at {src} by hand")
        if not isinstance(f.live, int) or isinstance(f.live, bool):
            raise Skip(f"replicas {f.live!r} is not a number")
        self.texts[src.file] = set_value(self.texts[src.file], kdoc, (*entry, "count"), f.live)
        return Where(src.file, (*entry, "count"), None, kdoc)

    def _edit_image(self, f: Finding, src: Source) -> Where:
        """An ``images:`` entry (a kustomization's, or a Flux Kustomization's ``spec.images``)."""
        kdoc, entry_path = src.locator
        if f.kind != "changed" or not isinstance(f.live, str):
            raise Skip(f"the image is gone live; remove its `images:` entry at {src} by hand")
        text = self.texts[src.file]
        entry: Any = _doc_at(load_all(text), kdoc)
        for seg in entry_path:
            entry = entry[seg] if isinstance(entry, (dict, list)) else None
        if not isinstance(entry, dict):
            raise Skip(f"no `images:` entry at {src}")
        name, tag, digest = parse_image(f.live)
        if tag is None and digest is None:
            raise Skip(f"the live image {f.live} has neither tag nor digest")
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
        return Where(src.file, tuple(entry_path), None, kdoc)

    def _edit_literal(self, f: Finding, src: Source) -> Where:
        """A generator's ``KEY=value`` literal; a key added live becomes a new literal of the entry."""
        assert f.path is not None
        if len(f.path) != 2 or f.path[0] != "data" or not isinstance(f.path[1], str):
            raise Skip(f"only data keys of a generated object can be written to its generator ({src})")
        key = f.path[1]
        kdoc, where = src.locator
        text = self.texts[src.file]
        if src.via == "literal":
            if f.live is None:
                self.texts[src.file] = delete_key(text, kdoc, tuple(where))
                return Where(src.file, tuple(where[:-1]), None, kdoc)
            self.texts[src.file] = set_value(text, kdoc, tuple(where), f"{key}={_text(f.live)}")
            return Where(src.file, tuple(where), None, kdoc)
        entry: Any = _doc_at(load_all(text), kdoc)
        for seg in where:
            entry = entry[seg] if isinstance(entry, (dict, list)) else None
        literals = entry.get("literals") if isinstance(entry, dict) else None
        n = len(literals) if isinstance(literals, list) else 0
        target: FieldPath = (*where, "literals", n) if n else (*where, "literals")
        value: Any = f"{key}={_text(f.live)}" if n else [f"{key}={_text(f.live)}"]
        self.texts[src.file] = set_value(text, kdoc, target, value)
        return Where(src.file, (*where, "literals", n), None, kdoc)

    def _edit_env(self, f: Finding, src: Source) -> Where:
        """A ``KEY=value`` line of a generator's env file (plain text, not YAML)."""
        text = self.texts.get(src.file)
        if text is None:
            raise Skip(f"{src.file} is not a file of the repository")
        lines = text.splitlines(True)
        i = src.line - 1
        if not 0 <= i < len(lines) or "=" not in lines[i]:
            raise Skip(f"{src} is not a KEY=value line")
        head, _, rest = lines[i].partition("=")
        end = rest[len(rest.rstrip("\r\n")) :]
        if f.live is None:
            del lines[i]
        else:
            lines[i] = f"{head}={_text(f.live)}{end}"
        self.texts[src.file] = "".join(lines)
        return Where(src.file, (), None, -src.line)

    def _edit_file(self, f: Finding, src: Source) -> Where:
        if not isinstance(f.live, str):
            raise Skip(f"the live value of {f.rendered} is not text")
        self.texts[src.file] = f.live
        return Where(src.file, (), None, -1)

    def _edit_json6902(self, f: Finding, d: DesiredObject, src: Source, text: str) -> Where:
        assert f.path is not None
        docs = load_all(text)
        if len(docs) != 1 or not isinstance(docs[0], list):
            raise Skip(f"{src.file} neither declares {f.ref} nor is a JSON 6902 patch")
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
            raise Skip(f"no operation in the JSON 6902 patch {src.file} sets this field")
        i, fp, append = best
        rest = f.path[len(fp) :]
        if append:
            g, lv = f.git, f.live
            ok = not rest and isinstance(g, list) and isinstance(lv, list) and len(g) == len(lv) and g[:-1] == lv[:-1]
            if not ok:
                raise Skip(f"the list is the base's plus an `add .../-` in {src.file}; edit both by hand")
            assert isinstance(lv, list)
            target: FieldPath = (i, "value")
            self.texts[src.file] = set_value(text, 0, target, lv[-1])
            return Where(src.file, target, None)
        target = (i, "value", *rest)
        if f.kind == "changed" and f.live is None:
            if not rest:
                raise Skip(f"the field is gone live; remove the operation from {src.file} by hand")
            self.texts[src.file] = delete_key(text, 0, target)
            return Where(src.file, target[:-1], None)
        self.texts[src.file] = set_value(text, 0, target, f.live)
        return Where(src.file, target, None)

    # ---- secrets

    def secret_rows(self) -> None:
        per: dict[ObjectRef, list[Finding]] = {}
        for row in self.rows:
            if row.finding.secret_value:
                per.setdefault(row.finding.ref, []).append(row.finding)
                row.reason = "Secret value: not copied (see Secrets)"
        unwritten = self._sops_secrets(per)
        for ref, found in sorted(per.items()):
            if ref not in unwritten:
                continue  # written encrypted by _sops_secrets
            keys = sorted({str(f.path[1]) for f in found if f.path and len(f.path) > 1})
            who = sorted({who_changed(f) for f in found})
            origin = found[0].helm
            if origin is not None:
                self.secrets.append(
                    f"{ref}: the value of {describe_keys(keys)} differs live (changed by {', '.join(who)}); values are not "
                    f"copied; {origin.listing()}"
                )
                continue
            where = found[0].source.file if found[0].source else "git"
            why = f" ({unwritten[ref]})" if unwritten[ref] else ""
            self.secrets.append(
                f"{ref}: the value of {describe_keys(keys)} differs live (changed by {', '.join(who)}); values are not copied: "
                f"encrypt the live value with SOPS and update {where}{why}"
            )

    def _sops_secrets(self, per: dict[ObjectRef, list[Finding]]) -> dict[ObjectRef, str]:
        """Write the live values of Secrets declared in SOPS-encrypted files, encrypted for the
        file's ``.sops.yaml`` rule (:mod:`.sops`: one decrypt and one encrypt per file, in memory).

        Returns the Secrets left to list, with why they were not written ("" for a Secret that
        is not SOPS-encrypted, whose listing is unchanged)."""
        unwritten: dict[ObjectRef, str] = {}
        per_file: dict[str, list[tuple[ObjectRef, list[Finding]]]] = {}
        for ref, found in sorted(per.items()):
            d = self.desired.get(ref)
            if found[0].helm is not None or d is None or not is_sops_document(d.body):
                unwritten[ref] = ""
                continue
            if d.declared is None or d.declared.file not in self.texts:
                unwritten[ref] = "not written encrypted: it comes from no file of the repository"
                continue
            if self.sops is None:
                unwritten[ref] = "not written encrypted: no SOPS writer was given"
                continue
            per_file.setdefault(d.declared.file, []).append((ref, found))
        writer = self.sops
        for file, secrets in per_file.items():
            assert writer is not None
            changes: list[SecretChange] = []
            for ref, found in secrets:
                d = self.desired[ref]
                assert d.declared is not None
                for f in found:
                    if f.path is not None:
                        changes.append(SecretChange(ref, d.declared.doc, d.declared.prefix, f.path, added=f.kind == "added"))
            try:
                text, rule = writer.rewrite(file, self.texts[file], changes)
            except NotWritable as exc:
                for ref, _ in secrets:
                    unwritten[ref] = f"not written encrypted: {exc}"
                continue
            self.texts[file] = text
            recipients = ", ".join(rule.age)
            for ref, found in secrets:
                d = self.desired[ref]
                assert d.declared is not None
                keys = sorted({str(f.path[1]) for f in found if f.path and len(f.path) > 1})
                who = sorted({who_changed(f) for f in found})
                for row in self.rows:
                    f = row.finding
                    if f.ref == ref and f.secret_value and f.path is not None:
                        row.reason = None
                        row.where = Where(file, self._sops_path(text, d.declared.doc, d.declared.prefix, f), None, d.declared.doc)
                self.sops_written.append(
                    f"{ref}: the live value of {describe_keys(keys)} (changed by {', '.join(who)}) is written to {file} "
                    f"encrypted with sops for the {rule.source} rule ({recipients}); the plaintext stayed in memory"
                )
        return unwritten

    @staticmethod
    def _sops_path(text: str, doc: int, prefix: tuple[str | int, ...], f: Finding) -> FieldPath:
        """Where the key now is in the re-encrypted file (a key added live may sit in data or stringData)."""
        assert f.path is not None
        path: FieldPath = (*prefix, *f.path)
        if f.kind == "added" or locate(text, doc, path) is None:
            for field in ("data", "stringData"):
                other: FieldPath = (*prefix, field, *f.path[1:])
                if locate(text, doc, other) is not None:
                    return other
            return (*prefix, *f.path[:1])
        return path


def _patch_document(text: str, kind: str, names: list[str], namespace: str) -> int | None:
    """The document of a patch file that patches ``kind``/``name`` (a patch names the object as
    its base declares it; its namespace may be left out, or be the final one)."""
    hits: list[int] = []
    for i, d in enumerate(load_all(text)):
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
