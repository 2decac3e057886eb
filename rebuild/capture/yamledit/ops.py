"""The public operations: find a document, locate a value, and the verified edits backport uses.

Why this exists: each public edit computes the data the file must hold afterwards, lets
:mod:`rebuild.capture.yamledit.splice` change the text, and then loads the result to prove that only the
intended value changed (``YamlEditError`` otherwise, and no text). Keeping that contract in one
module makes it visible that no public function returns unchecked text.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml
from yaml.nodes import ScalarNode

from rebuild.capture.yamledit.emit import _check_value
from rebuild.capture.yamledit.geometry import _NULL, Span, _end, _walk
from rebuild.capture.yamledit.parse import YamlEditError, _check_doc, _err, _load_all, _one_line, _parse, _verify
from rebuild.capture.yamledit.splice import _build, _build_item, _delete, _set
from rebuild.core.model import FieldPath

# --------------------------------------------------------------------------- the data an edit must produce


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
