"""What a backport plan produces, and the state its steps share while planning.

The planner's steps (field edits in :mod:`.fields`, new and deleted objects in :mod:`.objects`)
and the pull request text (:mod:`.text`) all read and write this state; it lives apart from them
so none of them imports another.
"""

from __future__ import annotations

import difflib
import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from rebuild.capture.drift import DriftReport, Finding
from rebuild.capture.yamledit import (
    YamlEditError,
    find_document,
    line_of,
)
from rebuild.core.model import DesiredObject, FieldPath, ObjectRef


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


class Skip(Exception):
    """A finding that cannot be written safely; the message is the reason shown in the PR."""


@dataclass
class Where:
    """How to find an edited value again at the end (lines move when other edits land).

    ``doc`` is the document index; ``-N`` means "line N of a plain text file" (an env file)
    and ``-1`` a whole file."""

    file: str
    path: FieldPath
    ref: ObjectRef | None  # the object whose document holds it (None: use ``doc``)
    doc: int = 0


@dataclass
class Row:
    finding: Finding
    where: Where | None = None
    reason: str | None = None  # set when not edited


def load_all(text: str) -> list[Any]:
    try:
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise Skip(f"not valid YAML: {' '.join(str(exc).split())}") from exc


def who_changed(f: Finding) -> str:
    return f.changed_by()


def describe_keys(keys: list[str]) -> str:
    if not keys:
        return "no keys"
    return ("key " if len(keys) == 1 else "keys ") + ", ".join(keys)


class Texts(Mapping[str, str]):
    """The repository's texts as edited so far: the planner's edits over the caller's ``files``.

    Nothing is copied: ``files`` may read each file only when it is first asked for (a capture
    edits a handful of the thousands of files a repository holds), and :meth:`copy` snapshots the
    edits alone (a HelmRelease's values are edited all or none)."""

    def __init__(self, files: Mapping[str, str], edits: dict[str, str] | None = None) -> None:
        self.files = files
        self.edits: dict[str, str] = {} if edits is None else edits

    def __getitem__(self, path: str) -> str:
        return self.edits[path] if path in self.edits else self.files[path]

    def __setitem__(self, path: str, text: str) -> None:
        self.edits[path] = text

    def __contains__(self, path: object) -> bool:
        return path in self.edits or path in self.files

    def __iter__(self) -> Iterator[str]:
        yield from self.edits
        yield from (p for p in self.files if p not in self.edits)

    def __len__(self) -> int:
        return len(self.edits) + sum(1 for p in self.files if p not in self.edits)

    def copy(self) -> Texts:
        return Texts(self.files, dict(self.edits))


class PlannerState:
    """The texts being edited and everything the pull request reports, shared by the planning steps."""

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
        self.texts = Texts(files)
        self.new_dir = posixpath.normpath(new_objects_dir.strip("/")) if new_objects_dir.strip("/") else "."
        self.include_deletions = include_deletions
        self.root_kustomization = root_kustomization
        self.rows: list[Row] = []
        self.secrets: list[str] = []
        # Secrets whose live values were written encrypted with sops (one line each, no value).
        self.sops_written: list[str] = []
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

    # ---- locations after every edit

    def location(self, where: Where) -> str:
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
