"""Rendering Python values as YAML text: scalars in a given quoting style, block and flow collections.

Why this exists: an edit writes new tokens into a hand-written file, so each value must come out
in the style the file already uses (the node's quoting, the block indicator, the indentation step
and sequence style measured by :mod:`rebuild.capture.yamledit.geometry`) and read back as the same value
under YAML 1.1 and 1.2 parsers. ``dump_clean`` renders whole new manifests with the same rules.
Pure functions from values to text; nothing here reads the file being edited.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.emitter import Emitter
from yaml.events import (
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    StreamEndEvent,
    StreamStartEvent,
)
from yaml.nodes import ScalarNode

from rebuild.capture.yamledit.parse import YamlEditError, _err, _same
from rebuild.core.model import FieldPath

_STR = "tag:yaml.org,2002:str"

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


def _inline(value: Any, *, style: str | None = None, flow: bool = False) -> str:
    """One-line YAML text for any value: a scalar in ``style`` when still possible, else flow style."""
    if isinstance(value, dict | list):
        return _flow(value)
    return _scalar_text(value, style=style, flow=flow)


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


# --------------------------------------------------------------------------- new values and new manifests


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
