"""Reading a manifest: PyYAML's parse of the text with every node's position, and loading it back.

Why this exists: every edit starts from where each node sits in the text (``Mark`` offsets,
anchors and aliases kept apart) and ends by loading the new text to check it holds exactly the
intended data. Both halves, the error every step raises, and the line-offset helpers the parse
needs live here, at the bottom of the package; nothing here renders or changes text.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.events import AliasEvent, DocumentEndEvent, DocumentStartEvent, StreamEndEvent
from yaml.nodes import Node, ScalarNode

from rebuild.core.errors import RebuildError
from rebuild.core.model import FieldPath, render_path

_ALIAS_TAG = "tag:rebuild,alias"


class YamlEditError(RebuildError):
    """An edit that cannot be done safely; the message names the path and the reason."""

    def __init__(self, message: str, *, path: FieldPath | None = None) -> None:
        super().__init__(message, fix="edit this field by hand")
        self.path = path


def _err(path: FieldPath, reason: str) -> YamlEditError:
    where = render_path(path) if path else "<document>"
    return YamlEditError(f"cannot edit {where}: {reason}", path=path)


# --------------------------------------------------------------------------- parsing


class _Loader(yaml.SafeLoader):
    """A SafeLoader whose composer records anchors and keeps aliases as separate nodes.

    PyYAML's composer returns the anchored node itself for an alias, so the alias's own position
    would be lost. Here an alias becomes a proxy ``ScalarNode`` at the alias's position, and
    ``alias_of`` maps the proxy to the node it refers to.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.anchored: set[int] = set()
        self.alias_of: dict[int, Node] = {}

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        events: Any = self  # the Parser half of the loader is untyped in the stubs
        if self.check_event(AliasEvent):
            event = events.get_event()
            anchor = getattr(event, "anchor", None)
            if anchor not in self.anchors:
                raise ComposerError(None, None, f"found undefined alias {anchor}", event.start_mark)
            proxy = ScalarNode(_ALIAS_TAG, f"*{anchor}", event.start_mark, event.end_mark)
            self.alias_of[id(proxy)] = self.anchors[anchor]
            return proxy
        event = events.peek_event()
        node = super().compose_node(parent, index)
        if node is not None and getattr(event, "anchor", None) is not None:
            self.anchored.add(id(node))
        return node


@dataclass
class _Parsed:
    text: str
    roots: list[Node]
    regions: list[tuple[int, int]]  # [start, end) of each document's text, separators included
    explicit_start: list[bool]
    anchored: set[int]
    alias_of: dict[int, Node]
    data: list[Any]
    nl: str


# libyaml's loader when present: several times faster on big multi-document files, same data.
_FastLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_all(text: str) -> list[Any]:
    return list(yaml.load_all(text, Loader=_FastLoader))


@functools.lru_cache(maxsize=16)
def _parse(text: str) -> _Parsed:
    """Parse once per distinct text (an edit looks a file up several times); results are read-only."""
    loader = _Loader(text)
    events: Any = loader  # the Parser half of the loader is untyped in the stubs
    roots: list[Node] = []
    bounds: list[tuple[DocumentStartEvent, DocumentEndEvent]] = []
    try:
        events.get_event()  # StreamStartEvent
        while not loader.check_event(StreamEndEvent):
            start = events.get_event()
            root = loader.compose_node(None, 0)
            end = events.get_event()
            loader.anchors = {}
            assert isinstance(start, DocumentStartEvent) and isinstance(end, DocumentEndEvent) and root is not None
            roots.append(root)
            bounds.append((start, end))
        data = _load_all(text)
    except yaml.YAMLError as exc:
        raise YamlEditError(f"not valid YAML (templated?): {_one_line(exc)}") from exc
    finally:
        loader.dispose()
    starts: list[int] = []
    explicit: list[bool] = []
    for i, (s_ev, _) in enumerate(bounds):
        explicit.append(bool(s_ev.explicit))
        if i == 0:
            starts.append(0)
        elif s_ev.explicit:
            assert s_ev.start_mark is not None
            starts.append(_line_start(text, s_ev.start_mark.index))
        else:  # a bare document after an explicit "..." end marker
            prev_end = bounds[i - 1][1].end_mark
            assert prev_end is not None
            starts.append(_after_line(text, prev_end.index))
    regions = [(s, starts[i + 1] if i + 1 < len(starts) else len(text)) for i, s in enumerate(starts)]
    nl = "\r\n" if "\r\n" in text else "\n"
    return _Parsed(text, roots, regions, explicit, loader.anchored, loader.alias_of, data, nl)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _check_doc(info: _Parsed, doc: int) -> None:
    if not 0 <= doc < len(info.roots):
        raise YamlEditError(f"document {doc} does not exist (the file has {len(info.roots)})")


# --------------------------------------------------------------------------- line offsets


def _line_start(text: str, pos: int) -> int:
    return text.rfind("\n", 0, pos) + 1


def _after_line(text: str, pos: int) -> int:
    """Offset of the start of the line after the one holding ``pos`` (len(text) if none)."""
    i = text.find("\n", pos)
    return len(text) if i == -1 else i + 1


def _line_content_end(text: str, pos: int) -> int:
    """Offset of the end of the line holding ``pos``, before its line break."""
    i = text.find("\n", pos)
    if i == -1:
        return len(text)
    return i - 1 if i > 0 and text[i - 1] == "\r" else i


# --------------------------------------------------------------------------- loading an edit back


def _same(a: Any, b: Any) -> bool:
    """Equality that also compares types (so 1 != True != 1.0 != "1")."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def _verify(new: str, expected: list[Any], path: FieldPath, what: str) -> None:
    try:
        got = _load_all(new)
    except yaml.YAMLError as exc:
        raise _err(path, f"{what} would produce invalid YAML: {_one_line(exc)}") from exc
    if len(got) != len(expected):
        raise _err(path, f"{what} would change the number of documents ({len(expected)} -> {len(got)})")
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        if not _same(g, e):
            raise _err(path, f"{what} would not load as intended (document {i} differs from the expected data)")
