"""File access confined to one checkout, and the object documents of its files.

Every step of rendering reads files through :class:`Repo`, so no path or symlink leads outside the
repository and every file is parsed once, whichever step asks first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rebuild.core.yamlload import LoadedDoc, YamlLoadError, load_all
from rebuild.desired.kustsource import KUSTOMIZATION_FILES
from rebuild.desired.render.results import Problem

MAX_FILE_BYTES = 20 * 1024 * 1024


@dataclass
class Doc:
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


def _object_docs(docs: list[LoadedDoc]) -> list[Doc]:
    out: list[Doc] = []
    for i, d in enumerate(docs):
        data = d.data
        if isinstance(data, dict) and str(data.get("kind", "")).endswith("List") and isinstance(data.get("items"), list):
            for j, item in enumerate(data["items"]):
                pre: tuple[str | int, ...] = ("items", j)
                lines = {p[2:]: ln for p, ln in d.lines.items() if p[:2] == pre}
                out.append(Doc(i, pre, item, d.lines.get(pre, d.line), lines))
        else:
            out.append(Doc(i, (), data, d.line, d.lines))
    return out


class Repo:
    """File access confined to one checkout: no path or symlink may lead outside it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self._docs: dict[str, list[Doc]] = {}
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

    def docs(self, rel: str) -> list[Doc]:
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


def check_object(data: Any, file: str, line: int, problems: list[Problem]) -> bool:
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
