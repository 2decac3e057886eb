"""The history of drills: one JSON line per run, appended, never rewritten.

Why JSON lines and append-only: a drill scheduled every night by several runners (a CI job,
a CronJob, a person at a terminal) must never lose or corrupt earlier entries. Appends are
serialised with an exclusive ``flock`` and fsync'ed, so ten concurrent drills leave ten
lines. A process killed mid-write can leave at most one torn line; the next append starts
on a fresh line, and ``load`` skips (and reports) any line it cannot read instead of
refusing the whole history, because a trend with one gap beats no trend.

Each line is a compact summary of a run result (schema ``rebuild.run/v1``, the dict of
``core.results.RunResult``, minus the failure list, which can be large; the count is kept):
enough for the trend chart and for "how long did the drills take this quarter", without
letting the file grow by megabytes a night.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rebuild.core.errors import RebuildError
from rebuild.core.results import RunResult, as_dict
from rebuild.core.state import StateLayout

log = logging.getLogger(__name__)

HISTORY_SCHEMA = "rebuild.drills.history/v1"
DEFAULT_LIMIT = 50
# Keys of a run result kept in the history line (the rest is summarised or dropped).
KEPT = ("schema", "kind", "cluster", "started_at", "finished_at", "passed", "rto_seconds", "rpo", "objects", "error")


class HistoryError(RebuildError):
    """The history file cannot be written or read at all (permissions, not a file)."""


def default_path(state_dir: Path) -> Path:
    """``<state>/drills/history.jsonl``: the default place, next to clusters and stacks."""
    return StateLayout(state_dir).drill_history


def summarize(run: RunResult | dict[str, Any]) -> dict[str, Any]:
    """The history line for a result: scalar facts, phases without details, revisions, failure count."""
    result = as_dict(run)
    entry: dict[str, Any] = {"history": HISTORY_SCHEMA}
    for key in KEPT:
        if key in result:
            entry[key] = result[key]
    if isinstance(entry.get("error"), str):
        entry["error"] = entry["error"][:500]
    entry["phases"] = [
        {"name": p.get("name"), "seconds": p.get("seconds"), "status": p.get("status")}
        for p in result.get("phases") or []
        if isinstance(p, dict)
    ]
    entry["sources"] = [
        {"name": s.get("name"), "revision": s.get("revision"), "committed_at": s.get("committed_at")}
        for s in result.get("sources") or []
        if isinstance(s, dict)
    ]
    entry["failure_count"] = len(result.get("failures") or [])
    return entry


def append_jsonl(
    path: Path,
    obj: dict[str, Any],
    *,
    what: str = "the drill history",
    unless: Callable[[dict[str, Any]], bool] | None = None,
    hint: str = "",
) -> bool:
    """Append one JSON line under an exclusive lock and fsync it; False if ``unless`` matched an existing line.

    Shared by the drill history and the runbook audit log: both must keep every line whole
    when writers run concurrently or one of them is killed mid-write. ``unless`` is checked
    under the same lock, so "append once" holds against concurrent writers too; only lines
    containing ``hint`` are parsed for it (a long history stays cheap to append to).
    """
    line = (json.dumps(obj, ensure_ascii=False, default=str, separators=(",", ":")) + "\n").encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise HistoryError(f"{what} {path} cannot be written ({exc.strerror})", fix="check the folder's permissions") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            if unless is not None and size and any(unless(e) for e in _parse_lines(os.pread(fd, size, 0), hint)):
                return False
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # A writer killed mid-line left no newline: end that fragment so ours stays whole.
                line = b"\n" + line
            view = memoryview(line)
            while view:  # the lock keeps a partial write's remainder contiguous
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError as exc:
        raise HistoryError(f"appending to {what} {path} failed ({exc.strerror})", fix="check free disk space") from exc
    finally:
        os.close(fd)
    return True


def _parse_lines(raw: bytes, hint: str = "") -> Iterator[dict[str, Any]]:
    needle = json.dumps(hint, ensure_ascii=False)[1:-1].encode("utf-8")
    for line in raw.splitlines():
        if needle and needle not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            yield entry


def _key(entry: dict[str, Any]) -> tuple[str, str, str]:
    return (str(entry.get("kind", "")), str(entry.get("cluster", "")), str(entry.get("started_at", "")))


def append(path: Path, result: RunResult | dict[str, Any]) -> bool:
    """Append the summary of ``result`` once; safe against concurrent appenders.

    A run already in the history (same kind, cluster and start time) is not added again, so
    reporting a run twice (a resumed runbook, a retried CI job) keeps one line per run.
    Returns False when it was already there.
    """
    entry = summarize(result)
    key = _key(entry)
    return append_jsonl(path, entry, unless=lambda e: _key(e) == key, hint=key[2])


@dataclass
class History:
    """The readable entries (oldest first) and one message per line that was skipped."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read(path: Path, limit: int = DEFAULT_LIMIT) -> History:
    """The last ``limit`` readable entries of the history, oldest first, and the skipped lines."""
    out = History()
    if not path.exists():
        return out
    recent: deque[tuple[int, dict[str, Any]]] = deque(maxlen=max(0, limit))
    try:
        with open(path, "rb") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH)
            for n, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    entry = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    out.problems.append(f"{path}:{n}: skipped a corrupt line ({exc.__class__.__name__}: {str(exc)[:80]})")
                    continue
                if not isinstance(entry, dict):
                    out.problems.append(f"{path}:{n}: skipped a line that is not a JSON object")
                    continue
                recent.append((n, entry))
    except OSError as exc:
        raise HistoryError(
            f"the drill history {path} cannot be read ({exc.strerror})", fix="check the file's permissions"
        ) from exc
    out.entries = [e for _, e in recent]
    return out


def load(path: Path, limit: int = DEFAULT_LIMIT, *, warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The last ``limit`` entries, oldest first; each corrupt line is reported through ``warn`` (default: the log)."""
    h = read(path, limit)
    report = warn or log.warning
    for problem in h.problems:
        report(problem)
    return h.entries
