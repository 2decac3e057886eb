"""Chart folders of a checkout, read for the Helm preflight: Chart.yaml, values.yaml, values.schema.json.

Why it exists: before a cluster is created, rebuild checks each HelmRelease whose chart is in
the repository being rebuilt (rebuild.recover.helmpreflight): the version must be one of the
chart folders', the values must fit the chart. That check is pure; reading the folders is this
module's job, and nothing else. A folder that cannot be read (a Chart.yaml ``helm package``
would refuse, values.yaml that is not YAML, a schema that is not JSON) is returned with its
``problem`` set rather than raised, so the preflight can name the HelmRelease that uses it.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rebuild.adapters.helmrepo import find_charts, read_chart
from rebuild.core.errors import ConfigError

VALUES = "values.yaml"
SCHEMA = "values.schema.json"


@dataclass(frozen=True)
class ChartFolder:
    """One chart folder as Helm would load it; ``path`` is relative to the checkout (``/``-separated)."""

    path: str
    name: str = ""
    version: str = ""
    values: Mapping[str, Any] | None = None  # values.yaml (None: no file or empty)
    schema: Mapping[str, Any] | None = None  # values.schema.json (None: the chart has none)
    problem: str = ""  # why the folder cannot be used as a chart ("" when it can)


def read_folder(root: Path, rel: str) -> ChartFolder | None:
    """The chart in ``root/rel``; None when the folder has no Chart.yaml (no chart there)."""
    rel = clean_path(rel)
    folder = root / rel if rel else root
    if ".." in rel.split("/") or not (folder / "Chart.yaml").is_file():  # never outside the checkout
        return None
    try:
        meta = read_chart(folder)
    except ConfigError as exc:
        return ChartFolder(rel, problem=f"{rel}/Chart.yaml: {exc.message.split(': ', 1)[-1]}")
    name, version = str(meta["name"]), str(meta["version"])
    values: Mapping[str, Any] | None = None
    path = folder / VALUES
    if path.is_file():
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            return ChartFolder(rel, name, version, problem=f"{rel}/{VALUES} cannot be read as YAML: {_first_line(exc)}")
        if loaded is not None and not isinstance(loaded, Mapping):
            return ChartFolder(rel, name, version, problem=f"{rel}/{VALUES} is not a mapping of values")
        values = _jsonable(loaded) if loaded else None
    schema: Mapping[str, Any] | None = None
    path = folder / SCHEMA
    if path.is_file():
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return ChartFolder(rel, name, version, values, problem=f"{rel}/{SCHEMA} is not valid JSON: {_first_line(exc)}")
        if not isinstance(doc, Mapping):
            return ChartFolder(rel, name, version, values, problem=f"{rel}/{SCHEMA} is not a JSON object")
        schema = doc
    return ChartFolder(rel, name, version, values, schema)


def read_folders(root: Path, rel: str) -> list[ChartFolder]:
    """Every chart folder under ``root/rel`` (adapters.helmrepo.find_charts: what rebuild serves)."""
    base = root / clean_path(rel) if clean_path(rel) else root
    if not base.is_dir():
        return []
    out = []
    for folder in find_charts(base):
        got = read_folder(root, folder.relative_to(root).as_posix())
        if got is not None:
            out.append(got)
    return out


def clean_path(rel: str) -> str:
    """``./charts/web/`` → ``charts/web`` (Flux's chart paths are relative to the repository root)."""
    parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _jsonable(value: Any) -> Any:
    """values.yaml as Helm reads it (YAML to JSON): an unquoted date is a string there."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return value
