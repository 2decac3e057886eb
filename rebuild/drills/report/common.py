"""What every report format shares: the lenient reading of a result, times and texts in words, the next command.

The renderers (markdown.py, junit.py, page.py) read a :class:`RunResult` (``RunResult.read``
accepts the dataclass or its dict, leniently) and format these texts the same way, so the
Markdown, the JUnit ``system-out``, the HTML page and the webhook never disagree.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from rebuild.core.results import RunResult

Result = RunResult | Mapping[str, Any]

# XML 1.0 forbids most control characters even when escaped (and HTML shows them as boxes).
XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def text_of(v: Any) -> str:
    return "" if v is None else str(v)


def fmt_seconds(s: float | None) -> str:
    """41.2 s, 3 m 05 s, 2 h 04 m: precise where it matters, readable where it does not."""
    if s is None:
        return "unknown"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        m, sec = divmod(round(s), 60)
        return f"{m} m {sec:02d} s"
    if s < 86400 * 2:
        h, rem = divmod(round(s), 3600)
        return f"{h} h {rem // 60:02d} m"
    return f"{s / 86400:.1f} days"


def short_rev(rev: str) -> str:
    return rev[:12] if re.fullmatch(r"[0-9a-f]{13,64}", rev) else rev


def committed_text(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return ""
    return dt.datetime.fromtimestamp(v, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def rpo_text(v: RunResult) -> str:
    age = f"revision age {fmt_seconds(v.revision_age_seconds)}" if v.revision_age_seconds is not None else "revision age unknown"
    if v.uncaptured_changes is None:
        unc = "uncaptured manual changes: not measured (no live cluster given)"
    else:
        unc = f"uncaptured manual changes: {v.uncaptured_changes}"
    return f"{age}; {unc}"


def objects_text(v: RunResult) -> str:
    o = v.objects
    return f"{o.verified}/{o.objects} verified, {o.missing} missing, {o.drifted} drifted, {o.unhealthy} not healthy"


def next_command(result: Result) -> str:
    """The one command to run next, as Velero ends a restore: what a reader should do now."""
    v = RunResult.read(result)
    failed_phase = next((p.name for p in v.phases if p.status == "failed"), "")
    revision = next((text_of(s.get("revision")) for s in v.sources if s.get("revision")), "")
    if v.passed:
        if v.kind == "up":
            return "rebuild verify   # re-check at any time; exit 0 while the cluster matches git"
        return "rebuild drill   # schedule it (docs/reports.md) to keep the trend current"
    if failed_phase == "desired" or (v.failures and failed_phase in ("", "desired")):
        rev = f" --revision {revision}" if revision else ""
        return f"rebuild plan{rev}   # lists every problem with file:line without touching a cluster"
    if v.kind == "up":
        return "rebuild verify   # details per object; `rebuild up` again continues where it stopped"
    if v.failures:
        rev = f" --revision {revision}" if revision else ""
        return f"rebuild drill --keep{rev}   # rebuild again and keep the cluster to inspect the failed objects"
    return "REBUILD_DEBUG=1 rebuild drill --keep   # keep the cluster and show the full error"
