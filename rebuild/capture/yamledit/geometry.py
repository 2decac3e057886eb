"""Where things sit in the parsed text: node extents, the node a path leads to, the file's layout habits.

Why this exists: a splice is only as safe as its offsets. PyYAML's marks do not say where a
block scalar or a block collection really ends, where a key's colon or an item's dash is, or
which node a selector such as ``[name=web]`` picks, and a new block must copy the file's
indentation step and sequence style. This module answers those questions from the parse and
never changes text.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from yaml.nodes import CollectionNode, MappingNode, Node, ScalarNode, SequenceNode

from rebuild.capture.yamledit.emit import _Fmt
from rebuild.capture.yamledit.parse import YamlEditError, _after_line, _err, _line_content_end, _Parsed
from rebuild.core.model import FieldPath, render_path

_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"
_BLOCK_STYLES = ("|", ">")


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
