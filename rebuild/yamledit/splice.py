"""Surgical, layout-preserving edits of hand-written Kubernetes YAML manifests.

Why this exists: drift capture backports a few changed fields into files people wrote by hand.
Re-dumping a document (even ruamel's round-trip mode with one indent setting) normalises
indentation, sequence style, quoting and flow collections, so the pull request would show
unrelated churn and lose the author's layout and comments. This module edits the *text*
instead: PyYAML parses the file only to learn where every node starts and ends (``Mark``
offsets), the new token(s) are spliced in at that position, and every other byte is left alone.

Every public edit is checked before it is returned: the result must parse, the edited path must
hold the new value, and every other value of every document must load exactly as before. If any
of that fails, or the edit cannot be done safely (the path goes through an anchor, an alias or a
``<<`` merge key, the value is templated, the layout is unusual), ``YamlEditError`` is raised and
no text is produced. Pure functions over ``str``; no I/O.
"""

from __future__ import annotations

import copy
import functools
import io
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.emitter import Emitter
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    StreamEndEvent,
    StreamStartEvent,
)
from yaml.nodes import CollectionNode, MappingNode, Node, ScalarNode, SequenceNode

from rebuild.errors import RebuildError
from rebuild.model import FieldPath, PathSeg, render_path

__all__ = [
    "Span",
    "YamlEditError",
    "append_document",
    "delete_key",
    "dump_clean",
    "find_document",
    "line_of",
    "locate",
    "remove_document",
    "set_value",
]

_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"
_ALIAS_TAG = "tag:rebuild,alias"
_BLOCK_STYLES = ("|", ">")


class YamlEditError(RebuildError):
    """An edit that cannot be done safely; the message names the path and the reason."""

    def __init__(self, message: str, *, path: FieldPath | None = None) -> None:
        super().__init__(message, fix="edit this field by hand")
        self.path = path


def _err(path: FieldPath, reason: str) -> YamlEditError:
    where = render_path(path) if path else "<document>"
    return YamlEditError(f"cannot edit {where}: {reason}", path=path)


@dataclass(frozen=True)
class Span:
    """Where a value node sits in the text.

    ``start``/``end`` are ``str`` offsets (``text[start:end]`` is the node's own text: the token
    with its quotes, a flow collection with its brackets, a block scalar from its ``|``/``>``
    indicator to the end of its last content line; never a trailing comment or line break).
    ``line``/``column``/``end_line`` are 1-based.
    """

    start: int
    end: int
    line: int
    column: int
    end_line: int


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


# --------------------------------------------------------------------------- text helpers


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


def _insert_after_line(text: str, pos: int, lines: list[str], nl: str) -> str:
    block = nl.join(lines)
    i = text.find("\n", pos)
    if i == -1:  # last line of a file without a final line break: keep it without one
        return text + nl + block
    return text[: i + 1] + block + nl + text[i + 1 :]


def _cut_lines(text: str, a: int, b: int) -> str:
    """Remove whole lines [a, b); keep a file without a final line break without one."""
    if b >= len(text) and not text.endswith("\n") and a > 0:
        a -= 1
        if a > 0 and text[a - 1] == "\r":
            a -= 1
    return text[:a] + text[b:]


# --------------------------------------------------------------------------- node geometry


@dataclass(frozen=True)
class _BlockGeom:
    indicator: int  # offset of "|" / ">"
    indicator_end: int  # end of the indicator token ("|-", ">+2", ...)
    header_end: int  # end of the header line, before its line break
    content_end: int  # end of the last non-blank content line (header_end if no content)
    keep_end: int  # end of the last line of the scalar, trailing blank lines included
    indent: int | None  # column of the content
    keep: bool


_BLOCK_HEADER = re.compile(r"(?:[!&]\S*[ \t]+)*([|>][-+0-9]*)")


def _block_geom(text: str, node: Node) -> _BlockGeom:
    s = node.start_mark.index
    m = _BLOCK_HEADER.match(text, s)
    if m is None:  # pragma: no cover - the scanner said it is a block scalar
        raise YamlEditError(f"unexpected block scalar header at line {node.start_mark.line + 1}")
    header_end = _line_content_end(text, s)
    limit = node.end_mark.index
    content_end = keep_end = header_end
    indent: int | None = None
    pos = _after_line(text, s)
    while pos < len(text) and pos <= limit and pos > header_end:
        nl_idx = text.find("\n", pos)
        stop = len(text) if nl_idx == -1 else nl_idx
        eol = stop - 1 if stop > pos and text[stop - 1] == "\r" else stop
        inside = (nl_idx != -1 and nl_idx < limit) or bool(text[pos:limit].strip())
        if not inside:
            break
        line = text[pos:eol]
        if line.strip():
            content_end = eol
            if indent is None:
                indent = len(line) - len(line.lstrip(" "))
        keep_end = eol
        if nl_idx == -1:
            break
        pos = nl_idx + 1
    return _BlockGeom(m.start(1), m.end(1), header_end, content_end, keep_end, indent, "+" in m.group(1))


def _end(text: str, node: Node) -> int:
    """Offset just past the node's last character (not its trailing comment or line break)."""
    if isinstance(node, ScalarNode):
        if node.style in _BLOCK_STYLES:
            g = _block_geom(text, node)
            return g.keep_end if g.keep else g.content_end
        return int(node.end_mark.index)
    assert isinstance(node, CollectionNode)
    if node.flow_style or not node.value:
        return int(node.end_mark.index)
    last = node.value[-1]
    return _end(text, last[1] if isinstance(node, MappingNode) else last)


def _colon_end(text: str, key: Node, path: FieldPath) -> int:
    i = int(key.end_mark.index)
    while i < len(text) and text[i] in " \t":
        i += 1
    if i >= len(text) or text[i] != ":":
        raise _err(path, f"unusual key layout at line {key.start_mark.line + 1}")
    return i + 1


def _dash_of(text: str, item: Node, path: FieldPath) -> int:
    """Offset of the "-" that introduces a block sequence item."""
    i = int(item.start_mark.index) - 1
    while i >= 0 and text[i] in " \t":
        i -= 1
    if i >= 0 and text[i] == "-":
        return i
    if i >= 0 and text[i] == "\n":  # "-" alone on the previous line
        j = i - 1
        while j >= 0 and text[j] in " \t\r":
            j -= 1
        if j >= 0 and text[j] == "-":
            return j
    raise _err(path, f"unusual sequence layout at line {item.start_mark.line + 1}")


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


# --------------------------------------------------------------------------- walking a path


@dataclass(frozen=True)
class _Step:
    parent: Node  # the mapping or sequence holding the child
    key: Node | None  # the key node when parent is a mapping
    child: Node
    index: int  # pair / item index inside parent.value
    seg: str | int  # the concrete segment (selectors resolved to an index)


def _selector(seg: tuple[str, str], path: FieldPath) -> list[tuple[str, str]]:
    keys, vals = seg
    if "," not in keys:
        return [(keys, vals)]
    ks, vs = keys.split(","), vals.split(",")
    if len(ks) != len(vs):
        raise _err(path, f"selector {keys}={vals} has {len(ks)} keys but {len(vs)} values")
    return list(zip(ks, vs, strict=True))


def _deref(info: _Parsed, node: Node, strict: bool, path: FieldPath) -> Node:
    if id(node) in info.alias_of:
        if strict:
            raise _err(path, f"the path goes through the alias {node.value} (line {node.start_mark.line + 1})")
        return info.alias_of[id(node)]
    if strict and id(node) in info.anchored:
        raise _err(path, f"the path goes through an anchored node (line {node.start_mark.line + 1})")
    return node


def _pairs(info: _Parsed, mapping: Node, strict: bool, path: FieldPath) -> list[tuple[Node, int, Node, Node]]:
    """(mapping that holds it, index, key, value) for each pair, following merges when not strict."""
    out: list[tuple[Node, int, Node, Node]] = []
    merged: list[tuple[Node, int, Node, Node]] = []
    for j, (k, v) in enumerate(mapping.value):
        if k.tag == _MERGE:
            if strict:
                raise _err(path, f"the mapping at line {mapping.start_mark.line + 1} uses a '<<' merge key")
            sources = v.value if isinstance(v, SequenceNode) else [v]
            for src in sources:
                target = info.alias_of.get(id(src), src)
                if isinstance(target, MappingNode):
                    merged.extend(_pairs(info, target, strict, path))
            continue
        out.append((mapping, j, k, v))
    seen = {k.value for _, _, k, _ in out if isinstance(k, ScalarNode)}
    out.extend(p for p in merged if not (isinstance(p[2], ScalarNode) and p[2].value in seen))
    return out


def _item_matches(info: _Parsed, item: Node, sel: list[tuple[str, str]]) -> bool:
    item = info.alias_of.get(id(item), item)
    if not isinstance(item, MappingNode):
        return False
    for key, want in sel:
        hits = [v for k, v in item.value if isinstance(k, ScalarNode) and k.value == key]
        if not hits and key == "protocol" and want == "TCP":
            continue  # Kubernetes defaults a port's protocol to TCP; manifests usually omit it
        if len(hits) != 1 or not isinstance(hits[0], ScalarNode) or hits[0].value != want:
            return False
    return True


def _walk(info: _Parsed, doc: int, path: FieldPath, *, strict: bool) -> tuple[list[_Step], FieldPath]:
    """Follow ``path`` as far as it exists: the steps taken and the segments still missing.

    ``strict`` (for edits) refuses anchors, aliases and merge keys on the way.
    """
    node = info.roots[doc]
    steps: list[_Step] = []
    for i, seg in enumerate(path):
        node = _deref(info, node, strict, path)
        if isinstance(seg, str):
            if not isinstance(node, MappingNode):
                if _is_null(node):
                    return steps, path[i:]
                raise _err(path, f"{render_path(path[:i]) or 'the document'} is not a mapping")
            hits = [p for p in _pairs(info, node, strict, path) if isinstance(p[2], ScalarNode) and p[2].value == seg]
            if len(hits) > 1:
                raise _err(path, f"the key {seg!r} appears {len(hits)} times")
            if not hits:
                return steps, path[i:]
            holder, j, k, v = hits[0]
            steps.append(_Step(holder, k, v, j, seg))
            node = v
            continue
        if not isinstance(node, SequenceNode):
            if _is_null(node):
                return steps, path[i:]
            raise _err(path, f"{render_path(path[:i]) or 'the document'} is not a list")
        if isinstance(seg, int):
            if 0 <= seg < len(node.value):
                j = seg
            elif seg == len(node.value):
                return steps, path[i:]
            else:
                raise _err(path, f"index {seg} is out of range (the list has {len(node.value)} items)")
        else:
            sel = _selector(seg, path)
            matches = [j for j, item in enumerate(node.value) if _item_matches(info, item, sel)]
            if len(matches) > 1:
                raise _err(path, f"{len(matches)} list items match [{seg[0]}={seg[1]}]")
            if not matches:
                return steps, path[i:]
            j = matches[0]
        steps.append(_Step(node, None, node.value[j], j, j))
        node = node.value[j]
    if strict:
        _deref(info, node, strict, path)
    return steps, ()


# --------------------------------------------------------------------------- rendering scalars

_RESOLVER: Any = yaml.resolver.Resolver()  # untyped in the stubs
_ANALYZER = Emitter(io.StringIO())
# Plain strings other YAML parsers (YAML 1.2, go-yaml as used by kubectl) would not read as strings.
_AMBIGUOUS = re.compile(
    r"""(?x)
    (?i:y|n|yes|no|on|off|true|false|null|~)
    | [-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?
    | [-+]?0[xX][0-9a-fA-F_]+ | [-+]?0[oObB][0-7_]+
    | [-+]?\.(?i:inf) | \.(?i:nan)
    """
)


def _plain_ok(s: str, *, flow: bool) -> bool:
    if not s or s != s.strip() or "\n" in s or "\r" in s or len(s) > 1000:
        return False
    if _RESOLVER.resolve(ScalarNode, s, (True, False)) != _STR or _AMBIGUOUS.fullmatch(s):
        return False
    if "{{" in s:  # keep anything that looks templated visibly a string
        return False
    a = _ANALYZER.analyze_scalar(s)
    if a.multiline:
        return False
    return bool(a.allow_flow_plain if flow else a.allow_block_plain)


def _needs_escape(ch: str) -> bool:
    o = ord(ch)
    return o < 0x20 or 0x7F <= o <= 0x9F or ch in "\u2028\u2029\ufeff" or 0xD800 <= o <= 0xDFFF or o in (0xFFFE, 0xFFFF)


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}


def _double(s: str) -> str:
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif _needs_escape(ch):
            o = ord(ch)
            out.append(f"\\x{o:02x}" if o <= 0xFF else f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _single_ok(s: str) -> bool:
    return not any(_needs_escape(ch) for ch in s)


def _yaml_plain(value: Any) -> str:
    """A non-string scalar (None, bool, int, float) as YAML text."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return yaml.safe_dump(value).split("\n", 1)[0]
    raise TypeError(f"not a YAML scalar: {value!r}")  # pragma: no cover - values are checked up front


def _scalar_text(value: Any, *, style: str | None = None, flow: bool = False) -> str:
    """One-line YAML text for a scalar, in ``style`` (the original node's) when still possible."""
    if not isinstance(value, str):
        return _yaml_plain(value)
    if style == "'" and _single_ok(value) and "\n" not in value:
        return "'" + value.replace("'", "''") + "'"
    if style is None and _plain_ok(value, flow=flow):
        return value
    return _double(value)


def _key_text(key: Any, *, flow: bool) -> str:
    if isinstance(key, str):
        return key if _plain_ok(key, flow=flow) else _double(key)
    return _yaml_plain(key)


def _block_lines(s: str, style: str) -> tuple[str, list[str]] | None:
    """``s`` as a block scalar in ``style``: (header such as "|-", content lines without indent).

    None when the string cannot be a block scalar of that style without an explicit indentation
    indicator or "keep" chomping (the caller then falls back to a double-quoted scalar).
    """
    events = [
        StreamStartEvent(),
        DocumentStartEvent(explicit=False),
        MappingStartEvent(None, None, True, flow_style=False),
        ScalarEvent(None, None, (True, True), "k"),
        ScalarEvent(None, None, (True, True), s, style=style),
        MappingEndEvent(),
        DocumentEndEvent(explicit=False),
        StreamEndEvent(),
    ]
    out = yaml.emit(events, width=2**30, allow_unicode=True)
    lines = out.split("\n")
    header = lines[0][3:] if lines[0].startswith("k: ") else ""
    if not re.fullmatch(r"[|>]-?", header) or header[0] != style:
        return None
    body = lines[1:]
    while body and body[-1] == "":
        body.pop()
    content: list[str] = []
    for line in body:
        if line and not line.startswith("  "):
            return None
        content.append(line[2:])
    return header, content


# --------------------------------------------------------------------------- rendering collections


@dataclass(frozen=True)
class _Fmt:
    step: int  # mapping indentation step
    seq: int  # column of "- " relative to the key holding the sequence (0: "- " at the key's column)
    gap: int  # columns from "-" to the item's content
    nl: str


def _inline(value: Any, *, flow: bool = False) -> str:
    if isinstance(value, dict | list):
        return _flow(value)
    return _scalar_text(value, flow=flow)


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key_text(k, flow=True)}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return _scalar_text(value, flow=True)


def _pair_lines(key: Any, value: Any, col: int, fmt: _Fmt) -> list[str]:
    head = " " * col + _key_text(key, flow=False) + ":"
    if isinstance(value, dict) and value:
        return [head, *_block(value, col + fmt.step, fmt)]
    if isinstance(value, list) and value:
        return [head, *_block(value, col + fmt.seq, fmt)]
    if isinstance(value, str) and "\n" in value:
        bl = _block_lines(value, "|")
        if bl is not None:
            return [f"{head} {bl[0]}", *[(" " * (col + fmt.step) + ln) if ln else "" for ln in bl[1]]]
    return [f"{head} {_inline(value)}"]


def _item_lines(item: Any, col: int, fmt: _Fmt, gap: int) -> list[str]:
    dash = " " * col + "-" + " " * (gap - 1)
    if isinstance(item, dict | list) and item:
        sub = _block(item, col + gap, fmt)
        sub[0] = dash + sub[0][col + gap :]
        return sub
    if isinstance(item, str) and "\n" in item:
        bl = _block_lines(item, "|")
        if bl is not None:
            return [dash + bl[0], *[(" " * (col + gap) + ln) if ln else "" for ln in bl[1]]]
    return [dash + _inline(item)]


def _block(value: Any, col: int, fmt: _Fmt) -> list[str]:
    """A non-empty dict or list as block YAML lines whose keys / dashes sit at ``col``."""
    out: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_pair_lines(k, v, col, fmt))
    else:
        for item in value:
            out.extend(_item_lines(item, col, fmt, fmt.gap))
    return out


# --------------------------------------------------------------------------- detecting the file's style


@dataclass
class _Observed:
    steps: Counter[int]
    seqs: list[tuple[int, int, int]]  # (line, dash offset from its key, id of the holding mapping)
    gaps: Counter[int]


def _observe(info: _Parsed, roots: list[Node]) -> _Observed:
    obs = _Observed(Counter(), [], Counter())
    stack = list(roots)
    while stack:
        node = stack.pop()
        if id(node) in info.alias_of or not isinstance(node, CollectionNode):
            continue
        if isinstance(node, MappingNode):
            for k, v in node.value:
                stack.append(v)
                if node.flow_style or not isinstance(v, CollectionNode) or v.flow_style or not v.value:
                    continue
                if isinstance(v, MappingNode):
                    d = v.value[0][0].start_mark.column - k.start_mark.column
                    if d > 0:
                        obs.steps[d] += 1
                else:
                    obs.seqs.append((k.start_mark.line, v.start_mark.column - k.start_mark.column, id(node)))
        else:
            stack.extend(node.value)
            if not node.flow_style and node.value and node.value[0].start_mark.line == node.start_mark.line:
                obs.gaps[node.value[0].start_mark.column - node.start_mark.column] += 1
    return obs


def _fmt_at(info: _Parsed, doc: int, mapping: Node | None) -> _Fmt:
    """Indentation step and sequence style to use for new content near ``mapping``."""
    here = _observe(info, [info.roots[doc]])
    every = _observe(info, info.roots)
    # Files mix styles (4 spaces for the object, 2 inside a container's `resources:`): the
    # nesting already used under the mapping being extended wins over the document's habit.
    local = _observe(info, [mapping]).steps if isinstance(mapping, MappingNode) else Counter()
    steps = local or here.steps or every.steps
    step = steps.most_common(1)[0][0] if steps else 2
    gaps = here.gaps or every.gaps
    gap = gaps.most_common(1)[0][0] if gaps else 2
    line = mapping.start_mark.line if mapping is not None else 0
    seq = 0
    siblings = [s for s in here.seqs if mapping is not None and s[2] == id(mapping)]
    for pool in (siblings, here.seqs, every.seqs):
        if pool:
            seq = min(pool, key=lambda s: abs(s[0] - line))[1]
            break
    return _Fmt(step, max(seq, 0), max(gap, 2), info.nl)


# --------------------------------------------------------------------------- building missing structure


def _coerce_selector_value(v: str) -> Any:
    return int(v) if re.fullmatch(r"-?[0-9]+", v) else v


def _build(rest: FieldPath, value: Any, path: FieldPath) -> Any:
    """The value to insert for the missing segments ``rest`` ending in ``value``."""
    if not rest:
        return value
    seg, tail = rest[0], rest[1:]
    if isinstance(seg, str):
        return {seg: _build(tail, value, path)}
    if isinstance(seg, int) and seg != 0:
        raise _err(path, f"cannot create a list at index {seg}")
    return [_build_item(seg, tail, value, path)]


def _build_item(seg: PathSeg, tail: FieldPath, value: Any, path: FieldPath) -> Any:
    if isinstance(seg, int):
        return _build(tail, value, path)
    if isinstance(seg, str):
        raise _err(path, f"expected a list index or selector, got the key {seg!r}")
    inner = _build(tail, value, path)
    if not isinstance(inner, dict):
        raise _err(path, f"a new list item [{seg[0]}={seg[1]}] must be a mapping")
    item: dict[str, Any] = {k: _coerce_selector_value(v) for k, v in _selector(seg, path)}
    for k, v in inner.items():
        if k in item and str(v) != str(item[k]).lower() and str(v) != str(item[k]):
            raise _err(path, f"the new item's {k}={v!r} contradicts the selector [{seg[0]}={seg[1]}]")
        item[k] = v
    return item


def _check_value(value: Any, path: FieldPath) -> None:
    if value is None or isinstance(value, str | bool | int | float):
        return
    if isinstance(value, list):
        for v in value:
            _check_value(v, path)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise _err(path, f"mapping key {k!r} is not a string")
            _check_value(v, path)
        return
    raise _err(path, f"{type(value).__name__} is not a YAML value")


# --------------------------------------------------------------------------- primitive text edits


def _splice(text: str, a: int, b: int, new: str) -> str:
    return text[:a] + new + text[b:]


def _context(steps: list[_Step]) -> tuple[_Step | None, bool]:
    ctx = steps[-1] if steps else None
    return ctx, ctx is not None and bool(getattr(ctx.parent, "flow_style", False))


def _replace(text: str, info: _Parsed, doc: int, steps: list[_Step], node: Node, value: Any, path: FieldPath) -> str:
    """Replace the whole value ``node`` (reached by ``steps``) with ``value``."""
    ctx, in_flow = _context(steps)
    start = int(node.start_mark.index)
    if text[start : start + 1] in ("!", "&", "*"):
        raise _err(path, f"the value at line {node.start_mark.line + 1} has a tag, anchor or alias")
    end = _end(text, node)
    pad = " " if start == end else ""  # an empty value ("key:" / "-"): keep a space after the indicator
    style = node.style if isinstance(node, ScalarNode) else None
    big = isinstance(value, dict | list) and bool(value)

    if in_flow:
        if isinstance(value, str):
            return _splice(text, start, end, pad + _scalar_text(value, style=style, flow=True))
        return _splice(text, start, end, pad + _inline(value, flow=True))
    if isinstance(node, CollectionNode) and node.flow_style:
        return _splice(text, start, end, _inline(value))
    if isinstance(node, ScalarNode) and not big:
        if isinstance(value, str):
            if style in _BLOCK_STYLES:
                return _rewrite_block_scalar(text, info, doc, ctx, node, value)
            return _splice(text, start, end, pad + _scalar_text(value, style=style))
        return _splice(text, start, end, pad + _inline(value))
    if isinstance(node, CollectionNode) and not big:  # a block collection becomes a one-line value
        b = _line_content_end(text, end)
        if ctx is not None and ctx.key is not None:
            return _splice(text, _colon_end(text, ctx.key, path), b, " " + _inline(value))
        if ctx is not None:  # a list item: "- {}" on the dash's line
            return _splice(text, _dash_of(text, node, path) + 1, b, " " + _inline(value))
        return _splice(text, start, b, _inline(value))
    return _block_replace(text, info, doc, ctx, node, value, path)


def _block_replace(text: str, info: _Parsed, doc: int, ctx: _Step | None, node: Node, value: Any, path: FieldPath) -> str:
    """Replace a block-context value with a non-empty dict / list rendered as block YAML."""
    start, end = int(node.start_mark.index), _end(text, node)
    block_coll = isinstance(node, CollectionNode)
    nl = info.nl
    if ctx is not None and ctx.key is not None:  # value of a block mapping key
        fmt = _fmt_at(info, doc, ctx.parent)
        kc = ctx.key.start_mark.column
        lines = _block(value, kc + (fmt.step if isinstance(value, dict) else fmt.seq), fmt)
        colon = _colon_end(text, ctx.key, path)
        if block_coll:
            return _splice(text, colon, _line_content_end(text, end), nl + nl.join(lines))
        return _insert_after_line(_splice(text, colon, end, ""), colon, lines, nl)
    if ctx is None and text[_line_start(text, start) : start].strip():
        raise _err(path, "the document's value does not start on its own line")
    col = start - _line_start(text, start)
    fmt = _fmt_at(info, doc, None)
    lines = _block(value, col, fmt)
    new = nl.join([lines[0][col:], *lines[1:]])
    return _splice(text, start, _line_content_end(text, end) if block_coll else end, new)


def _rewrite_block_scalar(text: str, info: _Parsed, doc: int, ctx: _Step | None, node: Node, value: str) -> str:
    g = _block_geom(text, node)
    region_end = g.keep_end if g.keep else g.content_end
    bl = _block_lines(value, text[g.indicator])
    if bl is None:
        return _splice(text, int(node.start_mark.index), region_end, _double(value))
    header, content = bl
    indent = g.indent
    if indent is None:
        fmt = _fmt_at(info, doc, ctx.parent if ctx else None)
        base = ctx.key.start_mark.column if ctx is not None and ctx.key is not None else node.start_mark.column
        indent = base + fmt.step
    body = "".join(info.nl + ((" " * indent + ln) if ln else "") for ln in content)
    return text[: g.indicator] + header + text[g.indicator_end : g.header_end] + body + text[region_end:]


def _flow_append(text: str, info: _Parsed, container: Node, entry: str) -> str:
    """Add ``entry`` after the last entry of a flow collection, one per line if it is laid out so."""
    if not container.value:
        pos = int(container.start_mark.index) + 1
        return _splice(text, pos, pos, entry)
    is_map = isinstance(container, MappingNode)
    last = container.value[-1][1] if is_map else container.value[-1]
    last_start = container.value[-1][0] if is_map else last
    pos = _end(text, last)
    if last_start.start_mark.line > container.start_mark.line:  # "{\n  a: 1,\n  b: 2\n}"
        return _splice(text, pos, pos, "," + info.nl + " " * last_start.start_mark.column + entry)
    return _splice(text, pos, pos, ", " + entry)


def _insert(text: str, info: _Parsed, doc: int, steps: list[_Step], rest: FieldPath, value: Any, path: FieldPath) -> str:
    """Create the missing segments ``rest`` under the deepest existing node."""
    container = steps[-1].child if steps else info.roots[doc]
    seg = rest[0]
    nl = info.nl
    if isinstance(container, MappingNode):
        assert isinstance(seg, str)
        v = _build(rest[1:], value, path)
        if container.flow_style:
            return _flow_append(text, info, container, f"{_key_text(seg, flow=True)}: {_flow(v)}")
        fmt = _fmt_at(info, doc, container)
        col = container.value[0][0].start_mark.column
        return _insert_after_line(text, _end(text, container), _pair_lines(seg, v, col, fmt), nl)
    if isinstance(container, SequenceNode):
        item = _build_item(seg, rest[1:], value, path)
        if container.flow_style:
            return _flow_append(text, info, container, _flow(item))
        fmt = _fmt_at(info, doc, steps[-1].parent if steps else None)
        col = container.start_mark.column
        first = container.value[0]
        gap = first.start_mark.column - col if first.start_mark.line == container.start_mark.line else fmt.gap
        return _insert_after_line(text, _end(text, container), _item_lines(item, col, fmt, max(gap, 2)), nl)
    if _is_null(container):
        return _replace(text, info, doc, steps, container, _build(rest, value, path), path)
    raise _err(path, f"{render_path(path[: len(steps)]) or 'the document'} is not a mapping or list")  # pragma: no cover


def _delete(text: str, info: _Parsed, doc: int, steps: list[_Step], path: FieldPath) -> str:
    step = steps[-1]
    parent = step.parent
    if len(parent.value) == 1:  # the last entry: the collection becomes {} / []
        empty: Any = {} if isinstance(parent, MappingNode) else []
        return _replace(text, info, doc, steps[:-1], parent, empty, path)
    is_map = isinstance(parent, MappingNode)
    j, n = step.index, len(parent.value)

    def first(i: int) -> int:
        return int((parent.value[i][0] if is_map else parent.value[i]).start_mark.index)

    def last(i: int) -> int:
        return _end(text, parent.value[i][1] if is_map else parent.value[i])

    if getattr(parent, "flow_style", False):
        if j < n - 1:
            return _splice(text, first(j), first(j + 1), "")
        return _splice(text, last(j - 1), last(j), "")
    after = _after_line(text, last(j))
    if is_map:
        key = step.key
        assert key is not None
        ls = _line_start(text, key.start_mark.index)
        prefix = text[ls : key.start_mark.index]
        if not prefix.strip():
            return _cut_lines(text, ls, after)
        if prefix.strip(" -") or "-" not in prefix or j != 0:
            raise _err(path, f"unusual key layout at line {key.start_mark.line + 1}")
        # "- key: v" (first key of a list item): pull the next key up onto the dash line
        nxt = first(1)
        if not text[after:nxt].strip():
            return _splice(text, key.start_mark.index, nxt, "")
        dash_end = ls + len(prefix.rstrip())
        return _splice(text, dash_end, _line_content_end(text, last(j)), "")
    dash = _dash_of(text, step.child, path)
    ls = _line_start(text, dash)
    if text[ls:dash].strip():
        raise _err(path, f"unusual sequence layout at line {step.child.start_mark.line + 1}")
    return _cut_lines(text, ls, after)


# --------------------------------------------------------------------------- recursive set


_MISSING = object()


def _data_at(data: Any, steps: list[_Step]) -> Any:
    for s in steps:
        try:
            data = data[s.seg]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return data


def _templated(s: str) -> bool:
    return "{{" in s or "${" in s


def _set(text: str, doc: int, path: FieldPath, value: Any) -> str:
    info = _parse(text)
    steps, rest = _walk(info, doc, path, strict=True)
    if rest:
        return _insert(text, info, doc, steps, rest, value, path)
    node = steps[-1].child if steps else info.roots[doc]
    if _same(_data_at(info.data[doc], steps), value):
        return text
    if isinstance(node, ScalarNode) and isinstance(node.value, str) and _templated(node.value):
        raise _err(path, f"the value {node.value!r} is templated")
    if isinstance(node, MappingNode) and isinstance(value, dict) and value:
        keys = [k.value for k, _ in node.value]
        for k, v in value.items():
            text = _set(text, doc, (*path, k), v)
        for k in keys:
            if k not in value:
                text = _delete_path(text, doc, (*path, k))
        return text
    if isinstance(node, SequenceNode) and isinstance(value, list) and value:
        old = len(node.value)
        for i, v in enumerate(value):
            text = _set(text, doc, (*path, i), v)
        for i in range(old - 1, len(value) - 1, -1):
            text = _delete_path(text, doc, (*path, i))
        return text
    return _replace(text, info, doc, steps, node, value, path)


def _delete_path(text: str, doc: int, path: FieldPath) -> str:
    info = _parse(text)
    steps, rest = _walk(info, doc, path, strict=True)
    if rest:
        raise _err(path, "it is not in the file")
    if not steps:
        raise _err(path, "cannot delete a whole document (use remove_document)")
    return _delete(text, info, doc, steps, path)


# --------------------------------------------------------------------------- checking results


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


def _data_apply(docs: list[Any], doc: int, concrete: list[str | int], rest: FieldPath, value: Any, path: FieldPath) -> None:
    if not rest:
        if not concrete:
            docs[doc] = value
            return
        obj = docs[doc]
        for seg in concrete[:-1]:
            obj = obj[seg]
        obj[concrete[-1]] = value
        return
    obj = docs[doc]
    for seg in concrete:
        obj = obj[seg]
    if obj is None:
        built = _build(rest, value, path)
        if not concrete:
            docs[doc] = built
            return
        parent = docs[doc]
        for seg in concrete[:-1]:
            parent = parent[seg]
        parent[concrete[-1]] = built
    elif isinstance(obj, dict):
        obj[rest[0]] = _build(rest[1:], value, path)
    else:
        obj.append(_build_item(rest[0], rest[1:], value, path))


# --------------------------------------------------------------------------- public API


def find_document(text: str, *, kind: str, name: str, namespace: str | None) -> int | None:
    """Index of the document declaring ``kind``/``name`` in ``namespace``, or None.

    Indexes count every document of the stream, empty ones included (as ``yaml.safe_load_all``
    does). ``namespace`` None or "" matches documents without ``metadata.namespace``. When no
    document names the namespace exactly, a single document of that kind and name that has no
    namespace matches (the namespace then comes from kustomize or ``kubectl -n``).
    """
    try:
        docs = _load_all(text)
    except yaml.YAMLError as exc:
        raise YamlEditError(f"not valid YAML (templated?): {_one_line(exc)}") from exc
    want = namespace or ""
    loose: list[int] = []
    for i, d in enumerate(docs):
        if not isinstance(d, dict) or d.get("kind") != kind:
            continue
        meta = d.get("metadata")
        if not isinstance(meta, dict) or str(meta.get("name") or "") != name:
            continue
        ns = str(meta.get("namespace") or "")
        if ns == want:
            return i
        if not ns:
            loose.append(i)
    return loose[0] if want and len(loose) == 1 else None


def locate(text: str, doc: int, path: FieldPath) -> Span | None:
    """The span of the value at ``path`` in document ``doc``; None when it is not in the file.

    Read-only, so it follows aliases and ``<<`` merges to where the value is written.
    """
    info = _parse(text)
    _check_doc(info, doc)
    try:
        steps, rest = _walk(info, doc, path, strict=False)
    except YamlEditError:
        return None
    if rest:
        return None
    node = steps[-1].child if steps else info.roots[doc]
    node = info.alias_of.get(id(node), node)
    start, end = int(node.start_mark.index), _end(text, node)
    return Span(start, end, node.start_mark.line + 1, node.start_mark.column + 1, text.count("\n", 0, end) + 1)


def line_of(text: str, doc: int, path: FieldPath) -> int | None:
    """1-based line declaring ``path``: the key's line for a mapping key, else the value's line."""
    info = _parse(text)
    _check_doc(info, doc)
    try:
        steps, rest = _walk(info, doc, path, strict=False)
    except YamlEditError:
        return None
    if rest:
        return None
    if not steps:
        return int(info.roots[doc].start_mark.line) + 1
    last = steps[-1]
    node = last.key if last.key is not None else info.alias_of.get(id(last.child), last.child)
    return int(node.start_mark.line) + 1


def set_value(text: str, doc: int, path: FieldPath, value: Any) -> str:
    """Set ``path`` in document ``doc`` to ``value``, touching only the bytes that must change.

    A scalar keeps its quoting style when the new value is a string and that style can hold it (a
    plain string that would read as a number, bool, null, ... becomes double-quoted), keeps its
    trailing comment, and a block scalar keeps its ``|``/``>`` indicator and indentation. Missing
    keys are inserted after the last key of their mapping (flow mappings get ``, key: value``),
    missing intermediate mappings are created, a missing list item (``[name=x]`` selector or the
    index equal to the list's length) is appended in the list's own style. A dict or list onto an
    existing mapping or list is applied key by key / item by item, so only real changes show.
    New block content uses the file's indentation step and its nearest sequence style.
    """
    info = _parse(text)
    _check_doc(info, doc)
    _check_value(value, path)
    steps, rest = _walk(info, doc, path, strict=True)
    expected = copy.deepcopy(info.data)
    _data_apply(expected, doc, [s.seg for s in steps], rest, value, path)
    if text.endswith("\n") or not text:
        new = _set(text, doc, path, value)
        _verify(new, expected, path, "the edit")
        return new
    # No final line break: edit with one (a block scalar on the last line needs it to keep its
    # value), then drop it again unless the value needs it.
    new = _set(text + info.nl, doc, path, value)
    bare = new[: -len(info.nl)] if new.endswith(info.nl) else new
    try:
        _verify(bare, expected, path, "the edit")
        return bare
    except YamlEditError:
        _verify(new, expected, path, "the edit")
        return new


def delete_key(text: str, doc: int, path: FieldPath) -> str:
    """Remove the key (or list item) at ``path`` and its value: only its own lines.

    Comment lines above it are kept. Removing the last entry of a collection leaves ``{}``/``[]``.
    Raises ``YamlEditError`` when the path is not in the file.
    """
    info = _parse(text)
    _check_doc(info, doc)
    steps, rest = _walk(info, doc, path, strict=True)
    if rest:
        raise _err(path, "it is not in the file")
    if not steps:
        raise _err(path, "cannot delete a whole document (use remove_document)")
    expected = copy.deepcopy(info.data)
    holder = expected[doc]
    for s in steps[:-1]:
        holder = holder[s.seg]
    del holder[steps[-1].seg]
    new = _delete(text, info, doc, steps, path)
    _verify(new, expected, path, "the deletion")
    return new


def append_document(text: str, yaml_text: str) -> str:
    """Append the document(s) in ``yaml_text`` after a ``---`` separator.

    An empty trailing document (a file ending in ``---``) is filled rather than followed by
    another separator. A file without a final line break stays without one.
    """
    info = _parse(text) if text.strip() else None
    try:
        adding = _load_all(yaml_text)
    except yaml.YAMLError as exc:
        raise YamlEditError(f"the new document is not valid YAML: {_one_line(exc)}") from exc
    nl = info.nl if info is not None else ("\r\n" if "\r\n" in yaml_text else "\n")
    body = re.sub(r"\A---[ \t]*\r?\n", "", yaml_text)
    if not body.endswith("\n"):
        body += nl
    if info is None or not info.roots:
        new = (text + body) if text.strip() else body
        expected = adding if info is None else [*info.data, *adding]
    else:
        last = info.roots[-1]
        sep = "" if text.endswith("\n") else nl
        if isinstance(last, ScalarNode) and last.value == "" and last.tag == _NULL and info.explicit_start[-1]:
            new = text + sep + body
            expected = [*info.data[:-1], *adding]
        else:
            new = text + sep + "---" + nl + body
            expected = [*info.data, *adding]
        if not text.endswith("\n"):
            new = new[: -len(nl)] if new.endswith(nl) else new
    _verify(new, expected, (), "appending the document")
    return new


def remove_document(text: str, doc: int) -> str:
    """Remove document ``doc`` with its separator line and the comments after that separator."""
    info = _parse(text)
    _check_doc(info, doc)
    a, b = info.regions[doc]
    new = text[:a] + text[b:]
    if doc == 0 and not info.explicit_start[0]:
        new = re.sub(r"\A---[ \t]*\r?\n", "", new)
    if new and not text.endswith("\n") and b == len(text):
        new = new.rstrip("\r\n")
    if not new.strip():
        new = ""
    expected = [d for i, d in enumerate(info.data) if i != doc]
    _verify(new, expected, (), f"removing document {doc}")
    return new


_TOP_ORDER = ("apiVersion", "kind", "metadata")
_META_ORDER = ("name", "generateName", "namespace", "labels", "annotations")


def _ordered(d: dict[str, Any], first: tuple[str, ...]) -> dict[str, Any]:
    out = {k: d[k] for k in first if k in d}
    out.update((k, v) for k, v in d.items() if k not in out)
    return out


def dump_clean(obj: dict[str, Any], *, indent_sequences: bool = False) -> str:
    """A new manifest as clean block YAML (for objects written to new files).

    Keys: apiVersion, kind, metadata (name, namespace, labels, annotations first), then the rest
    in the order given. 2-space indentation, ``- `` at the parent key's column unless
    ``indent_sequences``, strings quoted (double) only when needed, multi-line strings as ``|``.
    """
    _check_value(obj, ())
    top = _ordered(obj, _TOP_ORDER)
    if isinstance(top.get("metadata"), dict):
        top["metadata"] = _ordered(top["metadata"], _META_ORDER)
    if not top:
        return "{}\n"
    fmt = _Fmt(step=2, seq=2 if indent_sequences else 0, gap=2, nl="\n")
    out = "\n".join(_block(top, 0, fmt)) + "\n"
    loaded = yaml.safe_load(out)
    if not _same(loaded, obj):  # pragma: no cover - a rendering bug, never a user error
        raise YamlEditError("dump_clean produced YAML that does not load back to the object")
    return out
