"""The text edits themselves: replace, insert or delete one node's bytes, and set a value recursively.

Why this exists: these functions turn a walked path (:mod:`rebuild.capture.yamledit.geometry`) and a
rendered value (:mod:`rebuild.capture.yamledit.emit`) into new text, changing only the lines the edit
needs and building missing parents as values first. They do not check their result;
:mod:`rebuild.capture.yamledit.ops` verifies every edit before handing it out.
"""

from __future__ import annotations

import re
from typing import Any

from yaml.nodes import CollectionNode, MappingNode, Node, ScalarNode, SequenceNode

from rebuild.capture.yamledit.emit import _block, _block_lines, _double, _flow, _inline, _item_lines, _key_text, _pair_lines
from rebuild.capture.yamledit.geometry import (
    _BLOCK_STYLES,
    _block_geom,
    _colon_end,
    _dash_of,
    _end,
    _fmt_at,
    _is_null,
    _selector,
    _Step,
    _walk,
)
from rebuild.capture.yamledit.parse import _after_line, _err, _line_content_end, _line_start, _parse, _Parsed, _same
from rebuild.core.model import FieldPath, PathSeg, render_path

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


# --------------------------------------------------------------------------- primitive text edits


def _splice(text: str, a: int, b: int, new: str) -> str:
    return text[:a] + new + text[b:]


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
        return _splice(text, start, end, pad + _inline(value, style=style, flow=True))
    if isinstance(node, CollectionNode) and node.flow_style:
        return _splice(text, start, end, _inline(value))
    if isinstance(node, ScalarNode) and not big:
        if isinstance(value, str) and style in _BLOCK_STYLES:
            return _rewrite_block_scalar(text, info, doc, ctx, node, value)
        return _splice(text, start, end, pad + _inline(value, style=style))
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
