"""The Markdown report: for a ticket or a pull request; every cell escaped (names and messages come from people)."""

from __future__ import annotations

import html
from typing import Any

from rebuild.core.results import RunResult
from rebuild.drills.report.common import (
    Result,
    committed_text,
    fmt_seconds,
    next_command,
    objects_text,
    rpo_text,
    short_rev,
    text_of,
)


def _md(s: Any) -> str:
    """Text safe in a Markdown table cell: no HTML, no column breaks, no code-span breaks, one line."""
    t = html.escape(text_of(s), quote=False).replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`")
    return " ".join(t.split())


def render_markdown(result: Result) -> str:
    v = RunResult.read(result)
    out = [f"# {_md(v.title)}: {v.verdict}", ""]
    out += ["| | |", "|---|---|"]
    out.append(f"| Verdict | **{v.verdict}** |")
    out.append(f"| Kind | {_md(v.kind)} |")
    out.append(f"| Cluster | {_md(v.cluster)} |")
    out.append(f"| Started | {_md(v.started_at)} |")
    out.append(f"| Finished | {_md(v.finished_at)} |")
    out.append(f"| RTO | **{fmt_seconds(v.rto_seconds)}** ({v.rto_seconds:.2f} s) |")
    out.append(f"| RPO | {_md(rpo_text(v))} |")
    out.append(f"| Objects | {_md(objects_text(v))} |")
    out.append(f"| Failures | {len(v.failures)} |")
    out += ["", "## Recovery time by phase", ""]
    if v.phases:
        total = sum(p.seconds for p in v.phases) or 1.0
        out += ["| phase | seconds | share | status | detail |", "|---|---:|---:|---|---|"]
        for p in v.phases:
            out.append(f"| {_md(p.name)} | {p.seconds:.2f} | {100 * p.seconds / total:.0f}% | {p.status} | {_md(p.detail)} |")
        out.append(f"| **total** | **{sum(p.seconds for p in v.phases):.2f}** | 100% | | |")
    else:
        out.append("No phase ran.")
    out += ["", "## Recovery point", "", f"- Revision age: {fmt_seconds(v.revision_age_seconds)}"]
    unc = "not measured (no live cluster given)" if v.uncaptured_changes is None else str(v.uncaptured_changes)
    out.append(f"- Uncaptured manual changes: {unc}")
    out += ["", "## Sources", ""]
    if v.sources:
        out += ["| source | url | branch | path | revision | committed | objects |", "|---|---|---|---|---|---|---:|"]
        for s in v.sources:
            out.append(
                f"| {_md(s.get('name'))} | {_md(s.get('url'))} | {_md(s.get('branch'))} | {_md(s.get('path'))} "
                f"| `{_md(short_rev(text_of(s.get('revision'))))}` | {_md(committed_text(s.get('committed_at')))} "
                f"| {_md(s.get('objects'))} |"
            )
    else:
        out.append("No source was read.")
    out += ["", f"## Failures ({len(v.failures)})", ""]
    if v.failures:
        out += ["| object | source | message |", "|---|---|---|"]
        for f in v.failures:
            out.append(f"| {_md(f.object)} | {_md(f.source)} | {_md(f.message)} |")
    else:
        out.append("None.")
    if v.error:
        fence = "~~~~" if "```" in v.error else "```"
        out += ["", "## Error", "", f"{fence}text", html.escape(v.error, quote=False), fence]
    out += ["", "## Next", "", "```sh", next_command(result), "```", ""]
    return "\n".join(out)
