"""Load YAML into plain data *and* the line of every field, refusing what is dangerous.

Why not ``yaml.safe_load``: every message rebuild prints names a file and a line
("apps/cart.yaml:14"), so the loader keeps the 1-based line of each mapping key and
sequence item, keyed by path. It also refuses what safe_load silently accepts: duplicate
keys (the last one would win without a word) and alias bombs (a few KB of anchors can
expand to gigabytes), and reports non-UTF-8 bytes with their position.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

Path = tuple[str | int, ...]

MAX_NODES = 2_000_000  # expanded nodes per document; alias bombs blow far past this


@dataclass
class YamlProblem:
    line: int
    message: str


class YamlLoadError(Exception):
    def __init__(self, problems: list[YamlProblem]) -> None:
        super().__init__("; ".join(f"line {p.line}: {p.message}" for p in problems))
        self.problems = problems


@dataclass
class LoadedDoc:
    """One YAML document: its data, the line where it starts, and the line of every path."""

    data: Any
    line: int
    lines: dict[Path, int] = field(default_factory=dict)


# libyaml's composer when present (much faster on large repos); marks are the same.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Walker:
    def __init__(self) -> None:
        self.count = 0
        self.problems: list[YamlProblem] = []
        self._constructor = yaml.SafeLoader("")

    def scalar(self, node: ScalarNode) -> Any:
        value = self._constructor.construct_object(node)
        self._constructor.constructed_objects.clear()
        if isinstance(value, (dt.date, dt.datetime)):
            return node.value  # Kubernetes (sigs.k8s.io/yaml) keeps unquoted timestamps as strings
        if isinstance(value, bytes):
            return node.value  # !!binary stays as its base64 text, as in a Secret's data
        return value

    def walk(self, node: Node, path: Path, lines: dict[Path, int]) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise YamlLoadError([YamlProblem(node.start_mark.line + 1, "document expands to too many nodes (alias bomb?)")])
        if isinstance(node, ScalarNode):
            return self.scalar(node)
        if isinstance(node, SequenceNode):
            out_list: list[Any] = []
            for i, item in enumerate(node.value):
                lines[(*path, i)] = item.start_mark.line + 1
                out_list.append(self.walk(item, (*path, i), lines))
            return out_list
        if isinstance(node, MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.problems.append(YamlProblem(key_node.start_mark.line + 1, "merge keys (<<:) are not supported"))
                    continue
                key = self.walk(key_node, path, {})
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    self.problems.append(YamlProblem(key_node.start_mark.line + 1, "mapping keys must be scalars"))
                    continue
                skey = key if isinstance(key, str) else str(key)
                if skey in out:
                    first = lines.get((*path, skey), 0)
                    self.problems.append(
                        YamlProblem(key_node.start_mark.line + 1, f"duplicate key {skey!r} (first at line {first})")
                    )
                    continue
                lines[(*path, skey)] = key_node.start_mark.line + 1
                out[skey] = self.walk(value_node, (*path, skey), lines)
            return out
        raise YamlLoadError([YamlProblem(node.start_mark.line + 1, f"unsupported YAML node {type(node).__name__}")])


def load_all(text: str | bytes) -> list[LoadedDoc]:
    """Every document of a YAML stream, with lines. Raises YamlLoadError listing all problems found."""
    if isinstance(text, bytes):
        raw = text
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise YamlLoadError([YamlProblem(line, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x})")]) from exc
    docs: list[LoadedDoc] = []
    walker = _Walker()
    try:
        for node in yaml.compose_all(text, Loader=_Loader):
            if node is None:
                continue
            lines: dict[Path, int] = {}
            walker.count = 0
            data = walker.walk(node, (), lines)
            docs.append(LoadedDoc(data, node.start_mark.line + 1, lines))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        msg = f"invalid YAML: {exc.problem or exc}"
        if exc.context and exc.context_mark is not None and exc.context_mark.line + 1 != line:
            msg += f" ({exc.context} at line {exc.context_mark.line + 1})"
        raise YamlLoadError([*walker.problems, YamlProblem(line, msg)]) from exc
    except yaml.YAMLError as exc:
        raise YamlLoadError([*walker.problems, YamlProblem(0, f"invalid YAML: {exc}")]) from exc
    except RecursionError as exc:
        raise YamlLoadError([YamlProblem(0, "YAML nested too deeply")]) from exc
    if walker.problems:
        raise YamlLoadError(walker.problems)
    return docs
