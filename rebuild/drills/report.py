"""Turn one run result (schema ``rebuild.run/v1``) into the four reports people and CI read.

Why four: the JSON is the stable contract for tools; the Markdown goes into a ticket or a PR;
the JUnit XML makes CI systems show a failed phase or object as a red test without a
plugin; the HTML page is what a person opens after a drill to see at a glance where the
time went, what would be lost (RPO) and whether recovery is getting slower.

Everything here is pure rendering from the result dict plus atomic file writes: no
environment is read and nothing from the process is rendered, so a report can only show
what the result holds (which by contract holds no secret values). Every string is escaped
for its format (HTML, XML, Markdown) because object names, messages and URLs come from git
and from clusters, i.e. from people.

The renderers are lenient: a drill that failed before any phase ran still gets readable
reports, so missing keys fall back to empty values instead of raising. ``validate_result``
is the strict check of the schema (docs/reports.md) for producers and tests.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rebuild.adapters.fs import atomic_write

SCHEMA = "rebuild.run/v1"
PHASE_STATUSES = ("ok", "failed", "skipped")
REPORT_FILES = {"json": "result.json", "markdown": "report.md", "junit": "junit.xml", "html": "report.html"}

# Phase colours identify the phase; status overrides them (failed red, skipped grey) so a
# failure is the first thing the eye finds on the timeline.
# Neighbours differ in hue and lightness; no red, green or grey (those mean failed, passed, skipped).
PALETTE = ("#2563eb", "#0891b2", "#7c3aed", "#d97706", "#0d9488", "#4f46e5", "#92400e", "#475569", "#0284c7", "#a21caf")
RED, GREEN, GREY = "#dc2626", "#16a34a", "#9ca3af"


def write_reports(result: dict[str, Any], out_dir: Path, *, history: list[dict[str, Any]]) -> dict[str, Path]:
    """Write result.json, report.md, junit.xml and report.html into ``out_dir``.

    ``history`` is the list of earlier results (oldest first, as ``rebuild.drills.history.load``
    returns it); the current result is added to the trend unless it is already in it.
    Returns the path of each report by key: json, markdown, junit, html.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {key: out_dir / name for key, name in REPORT_FILES.items()}
    atomic_write(paths["json"], json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n")
    atomic_write(paths["markdown"], render_markdown(result))
    atomic_write(paths["junit"], render_junit(result))
    atomic_write(paths["html"], render_html(result, history))
    return paths


# --------------------------------------------------------------------------- schema


def validate_result(result: Any) -> list[str]:
    """Every way ``result`` departs from schema rebuild.run/v1 (empty list: it conforms)."""
    problems: list[str] = []
    if not isinstance(result, dict):
        return [f"the result must be a JSON object, not {type(result).__name__}"]

    def need(obj: dict[str, Any], key: str, types: tuple[type, ...], where: str, nullable: bool = False) -> Any:
        if key not in obj:
            problems.append(f"{where}{key} is missing")
            return None
        v = obj[key]
        if v is None and nullable:
            return None
        if (isinstance(v, bool) and bool not in types) or not isinstance(v, types):
            problems.append(f"{where}{key} must be {' or '.join(t.__name__ for t in types)}, not {type(v).__name__}")
            return None
        return v

    if result.get("schema") != SCHEMA:
        problems.append(f"schema must be {SCHEMA!r}, not {result.get('schema')!r}")
    kind = need(result, "kind", (str,), "")
    if kind is not None and kind not in ("drill", "up"):
        problems.append(f"kind must be 'drill' or 'up', not {kind!r}")
    need(result, "cluster", (str,), "")
    for key in ("started_at", "finished_at"):
        v = need(result, key, (str,), "")
        if v is not None and _parse_time(v) is None:
            problems.append(f"{key} {v!r} is not an ISO 8601 time")
    need(result, "passed", (bool,), "")
    need(result, "rto_seconds", (int, float), "")
    need(result, "error", (str,), "")
    rpo = need(result, "rpo", (dict,), "")
    if rpo is not None:
        need(rpo, "revision_age_seconds", (int, float), "rpo.", nullable=True)
        need(rpo, "uncaptured_changes", (int,), "rpo.", nullable=True)
    sources = need(result, "sources", (list,), "")
    for i, s in enumerate(sources or []):
        w = f"sources[{i}]."
        if not isinstance(s, dict):
            problems.append(f"sources[{i}] must be an object")
            continue
        for key in ("name", "url", "branch", "path", "revision"):
            need(s, key, (str,), w)
        need(s, "committed_at", (int, float), w, nullable=True)
        need(s, "objects", (int,), w)
    phases = need(result, "phases", (list,), "")
    for i, p in enumerate(phases or []):
        w = f"phases[{i}]."
        if not isinstance(p, dict):
            problems.append(f"phases[{i}] must be an object")
            continue
        need(p, "name", (str,), w)
        need(p, "seconds", (int, float), w)
        need(p, "detail", (str,), w)
        st = need(p, "status", (str,), w)
        if st is not None and st not in PHASE_STATUSES:
            problems.append(f"{w}status must be one of {', '.join(PHASE_STATUSES)}, not {st!r}")
    objects = need(result, "objects", (dict,), "")
    if objects is not None:
        for key in ("objects", "verified", "missing", "drifted", "unhealthy"):
            need(objects, key, (int,), "objects.")
    failures = need(result, "failures", (list,), "")
    for i, f in enumerate(failures or []):
        if not isinstance(f, dict):
            problems.append(f"failures[{i}] must be an object")
            continue
        for key in ("object", "source", "message"):
            need(f, key, (str,), f"failures[{i}].")
    return problems


# --------------------------------------------------------------------------- a lenient view


@dataclass(frozen=True)
class _Phase:
    name: str
    seconds: float
    status: str
    detail: str


@dataclass(frozen=True)
class _View:
    """The result with every field present and typed, whatever the producer left out."""

    kind: str
    cluster: str
    started_at: str
    finished_at: str
    passed: bool
    rto: float
    revision_age: float | None
    uncaptured: int | None
    sources: list[dict[str, Any]]
    phases: list[_Phase]
    objects: dict[str, int]
    failures: list[dict[str, str]]
    error: str

    @property
    def verdict(self) -> str:
        return "PASSED" if self.passed else "FAILED"

    @property
    def title(self) -> str:
        return f"rebuild {self.kind} {self.cluster}".strip()


def _num(v: Any, default: float = 0.0) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or math.isinf(v):
        return default
    return float(v)


def _text(v: Any) -> str:
    return "" if v is None else str(v)


def _view(result: dict[str, Any]) -> _View:
    rpo = result.get("rpo") if isinstance(result.get("rpo"), dict) else {}
    assert isinstance(rpo, dict)
    age = rpo.get("revision_age_seconds")
    unc = rpo.get("uncaptured_changes")
    phases: list[_Phase] = []
    for p in result.get("phases") or []:
        if not isinstance(p, dict):
            continue
        status = _text(p.get("status")) or "ok"
        phases.append(
            _Phase(
                _text(p.get("name")) or "?",
                max(0.0, _num(p.get("seconds"))),
                status if status in PHASE_STATUSES else "failed",
                _text(p.get("detail")),
            )
        )
    raw_objects = result.get("objects") if isinstance(result.get("objects"), dict) else {}
    assert isinstance(raw_objects, dict)
    objects = {k: int(_num(raw_objects.get(k))) for k in ("objects", "verified", "missing", "drifted", "unhealthy")}
    failures = [
        {k: _text(f.get(k)) for k in ("object", "source", "message")} for f in result.get("failures") or [] if isinstance(f, dict)
    ]
    rto = result.get("rto_seconds")
    return _View(
        kind=_text(result.get("kind")) or "drill",
        cluster=_text(result.get("cluster")),
        started_at=_text(result.get("started_at")),
        finished_at=_text(result.get("finished_at")),
        passed=result.get("passed") is True,
        rto=_num(rto) if rto is not None else sum(p.seconds for p in phases),
        revision_age=None if age is None else max(0.0, _num(age)),
        uncaptured=unc if isinstance(unc, int) and not isinstance(unc, bool) else None,
        sources=[s for s in result.get("sources") or [] if isinstance(s, dict)],
        phases=phases,
        objects=objects,
        failures=failures,
        error=_text(result.get("error")),
    )


def _parse_time(v: Any) -> dt.datetime | None:
    if not isinstance(v, str) or not v:
        return None
    try:
        t = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


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


def _short(rev: str) -> str:
    return rev[:12] if re.fullmatch(r"[0-9a-f]{13,64}", rev) else rev


def _committed(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return ""
    return dt.datetime.fromtimestamp(v, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _rpo_text(v: _View) -> str:
    age = f"revision age {fmt_seconds(v.revision_age)}" if v.revision_age is not None else "revision age unknown"
    if v.uncaptured is None:
        unc = "uncaptured manual changes: not measured (no live cluster given)"
    else:
        unc = f"uncaptured manual changes: {v.uncaptured}"
    return f"{age}; {unc}"


def _objects_text(v: _View) -> str:
    o = v.objects
    return (
        f"{o['verified']}/{o['objects']} verified, {o['missing']} missing, {o['drifted']} drifted, {o['unhealthy']} not healthy"
    )


def next_command(result: dict[str, Any]) -> str:
    """The one command to run next, as Velero ends a restore: what a reader should do now."""
    v = _view(result)
    failed_phase = next((p.name for p in v.phases if p.status == "failed"), "")
    revision = next((_text(s.get("revision")) for s in v.sources if s.get("revision")), "")
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


# --------------------------------------------------------------------------- Markdown


def _md(s: Any) -> str:
    """Text safe in a Markdown table cell: no HTML, no column breaks, no code-span breaks, one line."""
    t = html.escape(_text(s), quote=False).replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`")
    return " ".join(t.split())


def render_markdown(result: dict[str, Any]) -> str:
    v = _view(result)
    out = [f"# {_md(v.title)}: {v.verdict}", ""]
    out += ["| | |", "|---|---|"]
    out.append(f"| Verdict | **{v.verdict}** |")
    out.append(f"| Kind | {_md(v.kind)} |")
    out.append(f"| Cluster | {_md(v.cluster)} |")
    out.append(f"| Started | {_md(v.started_at)} |")
    out.append(f"| Finished | {_md(v.finished_at)} |")
    out.append(f"| RTO | **{fmt_seconds(v.rto)}** ({v.rto:.2f} s) |")
    out.append(f"| RPO | {_md(_rpo_text(v))} |")
    out.append(f"| Objects | {_md(_objects_text(v))} |")
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
    out += ["", "## Recovery point", "", f"- Revision age: {fmt_seconds(v.revision_age)}"]
    out.append(
        "- Uncaptured manual changes: " + ("not measured (no live cluster given)" if v.uncaptured is None else str(v.uncaptured))
    )
    out += ["", "## Sources", ""]
    if v.sources:
        out += ["| source | url | branch | path | revision | committed | objects |", "|---|---|---|---|---|---|---:|"]
        for s in v.sources:
            out.append(
                f"| {_md(s.get('name'))} | {_md(s.get('url'))} | {_md(s.get('branch'))} | {_md(s.get('path'))} "
                f"| `{_md(_short(_text(s.get('revision'))))}` | {_md(_committed(s.get('committed_at')))} "
                f"| {_md(s.get('objects'))} |"
            )
    else:
        out.append("No source was read.")
    out += ["", f"## Failures ({len(v.failures)})", ""]
    if v.failures:
        out += ["| object | source | message |", "|---|---|---|"]
        for f in v.failures:
            out.append(f"| {_md(f['object'])} | {_md(f['source'])} | {_md(f['message'])} |")
    else:
        out.append("None.")
    if v.error:
        fence = "~~~~" if "```" in v.error else "```"
        out += ["", "## Error", "", f"{fence}text", html.escape(v.error, quote=False), fence]
    out += ["", "## Next", "", "```sh", next_command(result), "```", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- JUnit XML

_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _x(s: Any) -> str:
    """XML 1.0 forbids most control characters even when escaped; CI parsers reject the file."""
    return _XML_INVALID.sub("\ufffd", _text(s))


def _junit_timestamp(v: str) -> str:
    t = _parse_time(v)
    # The common JUnit XSD types timestamp as xs:dateTime without a zone: write UTC.
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S") if t else ""


def render_junit(result: dict[str, Any]) -> str:
    """One testsuite, one testcase per phase and per failed object; CI shows them natively."""
    v = _view(result)
    cases: list[ET.Element] = []
    failures = skipped = 0
    for p in v.phases:
        case = ET.Element("testcase", {"classname": "phases", "name": _x(p.name), "time": f"{p.seconds:.3f}"})
        if p.status == "failed":
            failures += 1
            el = ET.SubElement(case, "failure", {"message": _x(p.detail or f"phase {p.name} failed"), "type": "PhaseFailed"})
            el.text = _x(f"phase {p.name} failed after {p.seconds:.2f}s: {p.detail or '(no detail)'}")
        elif p.status == "skipped":
            skipped += 1
            ET.SubElement(case, "skipped", {"message": _x(p.detail or "skipped")})
        cases.append(case)
    for f in v.failures:
        case = ET.Element("testcase", {"classname": "objects", "name": _x(f["object"] or "?"), "time": "0.000"})
        where = f"{f['source']}: " if f["source"] else ""
        el = ET.SubElement(case, "failure", {"message": _x(f"{where}{f['message']}"), "type": "ObjectFailed"})
        el.text = _x(f"{f['object']}\n  source: {f['source'] or '(unknown)'}\n  {f['message']}")
        failures += 1
        cases.append(case)
    if not v.passed and failures == 0:
        # A failed run must never look green in CI, even when no phase or object says why.
        case = ET.Element("testcase", {"classname": "run", "name": "verdict", "time": "0.000"})
        el = ET.SubElement(
            case, "failure", {"message": _x(v.error.splitlines()[0] if v.error else "run failed"), "type": "RunFailed"}
        )
        el.text = _x(v.error or "the run did not pass")
        failures += 1
        cases.append(case)
    total_time = f"{sum(p.seconds for p in v.phases):.3f}"
    counts = {"tests": str(len(cases)), "failures": str(failures), "errors": "0", "skipped": str(skipped), "time": total_time}
    root = ET.Element("testsuites", {"name": "rebuild", **counts})
    suite_attrs = {"name": _x(f"rebuild {v.kind} {v.cluster}".strip()), **counts}
    ts = _junit_timestamp(v.started_at)
    if ts:
        suite_attrs["timestamp"] = ts
    suite = ET.SubElement(root, "testsuite", suite_attrs)
    props = ET.SubElement(suite, "properties")
    prop_values: list[tuple[str, str]] = [
        ("kind", v.kind),
        ("cluster", v.cluster),
        ("passed", "true" if v.passed else "false"),
        ("rto_seconds", f"{v.rto:.3f}"),
        ("rpo_revision_age_seconds", "" if v.revision_age is None else f"{v.revision_age:.0f}"),
        ("rpo_uncaptured_changes", "" if v.uncaptured is None else str(v.uncaptured)),
    ]
    prop_values += [(f"source.{_text(s.get('name'))}.revision", _text(s.get("revision"))) for s in v.sources]
    for name, value in prop_values:
        ET.SubElement(props, "property", {"name": _x(name), "value": _x(value)})
    suite.extend(cases)
    out = ET.SubElement(suite, "system-out")
    out.text = _x(
        f"{v.title}: {v.verdict}\nRTO {fmt_seconds(v.rto)}\nRPO {_rpo_text(v)}\nobjects {_objects_text(v)}\n"
        + (f"error: {v.error}\n" if v.error else "")
        + f"next: {next_command(result)}\n"
    )
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# --------------------------------------------------------------------------- HTML


def _h(s: Any) -> str:
    # Control characters would render as boxes (and are parse errors): show U+FFFD instead.
    return html.escape(_XML_INVALID.sub("\ufffd", _text(s)), quote=True)


def _when(v: str) -> str:
    t = _parse_time(v)
    return t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if t else v


def _nice_step(span: float, max_ticks: int) -> float:
    """A 1/2/5 x 10^k tick step giving at most ``max_ticks`` ticks over ``span``."""
    if span <= 0:
        return 1.0
    raw = span / max(1, max_ticks)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * mag >= raw:
            return float(m * mag)
    return float(10 * mag)


def _tick_label(s: float) -> str:
    if s >= 120:
        return f"{s / 60:g}m"
    return f"{s:g}s"


def _phase_colour(index: int, status: str) -> str:
    if status == "failed":
        return RED
    if status == "skipped":
        return GREY
    return PALETTE[index % len(PALETTE)]


def timeline_svg(phases: list[_Phase], width: int = 960) -> str:
    """A stacked overview bar plus one Gantt row per phase, on a shared time axis."""
    label_w, right_w, row_h, top = 130, 90, 26, 10
    plot_w = width - label_w - right_w
    total = sum(p.seconds for p in phases)
    scale = plot_w / total if total > 0 else 0.0
    height = top + row_h * (len(phases) + 1) + 40
    parts = [
        f'<svg class="chart" role="img" aria-label="phase timeline" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">'
    ]
    # axis ticks (behind the bars)
    step = _nice_step(total, 8)
    axis_y = top + row_h * (len(phases) + 1) + 4
    t = 0.0
    while total > 0 and t <= total + 1e-9:
        x = label_w + t * scale
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{axis_y}" class="grid"/>')
        parts.append(f'<text x="{x:.1f}" y="{axis_y + 14}" class="tick" text-anchor="middle">{_h(_tick_label(t))}</text>')
        t += step
    # overview: every phase as a segment of one bar
    y = top
    parts.append(f'<text x="{label_w - 8}" y="{y + row_h / 2 + 4:.1f}" class="lbl strong" text-anchor="end">total</text>')
    x = float(label_w)
    for i, p in enumerate(phases):
        w = p.seconds * scale
        colour = _phase_colour(i, p.status)
        tip = f"{p.name}: {p.seconds:.2f}s ({p.status}){' - ' + p.detail if p.detail else ''}"
        parts.append(
            f'<rect x="{x:.1f}" y="{y + 3}" width="{max(w, 1.5):.1f}" height="{row_h - 6}" fill="{colour}" '
            f'class="seg"><title>{_h(tip)}</title></rect>'
        )
        if w > 7.5 * len(p.name) + 10:
            parts.append(
                f'<text x="{x + w / 2:.1f}" y="{y + row_h / 2 + 4:.1f}" class="inbar" text-anchor="middle">{_h(p.name)}</text>'
            )
        x += w
    parts.append(
        f'<text x="{label_w + plot_w + 8}" y="{y + row_h / 2 + 4:.1f}" class="lbl strong">{_h(fmt_seconds(total))}</text>'
    )
    # Gantt rows
    start = 0.0
    for i, p in enumerate(phases):
        y = top + row_h * (i + 1)
        colour = _phase_colour(i, p.status)
        x = label_w + start * scale
        w = p.seconds * scale
        tip = f"{p.name}: {p.seconds:.2f}s ({p.status}){' - ' + p.detail if p.detail else ''}"
        parts.append(f'<text x="{label_w - 8}" y="{y + row_h / 2 + 4:.1f}" class="lbl" text-anchor="end">{_h(p.name)}</text>')
        if p.status == "skipped":
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 7}" width="{max(w, 3):.1f}" height="{row_h - 14}" fill="{GREY}" class="seg">'
                f"<title>{_h(tip)}</title></rect>"
            )
            value = "skipped"
        else:
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 5}" width="{max(w, 2):.1f}" height="{row_h - 10}" rx="2" fill="{colour}" '
                f'class="seg"><title>{_h(tip)}</title></rect>'
            )
            value = f"{p.seconds:.1f}s" + (" failed" if p.status == "failed" else "")
        parts.append(
            f'<text x="{x + max(w, 3) + 6:.1f}" y="{y + row_h / 2 + 4:.1f}" class="val{" bad" if p.status == "failed" else ""}">'
            f"{_h(value)}</text>"
        )
        start += p.seconds
    parts.append("</svg>")
    return "".join(parts)


def _trend_entries(result: dict[str, Any], history: list[dict[str, Any]]) -> list[tuple[dict[str, Any], bool]]:
    def key(r: dict[str, Any]) -> tuple[str, str]:
        return (_text(r.get("cluster")), _text(r.get("started_at")))

    entries = [(h, False) for h in history if isinstance(h, dict)]
    if key(result) in {key(h) for h, _ in entries}:
        return [(h, key(h) == key(result)) for h, _ in entries]
    return [*entries, (result, True)]


def trend_svg(entries: list[tuple[dict[str, Any], bool]], width: int = 960) -> str:
    """RTO per drill as bars (green passed, red failed), oldest left, with dates under them."""
    left, right, top, bottom = 60, 20, 24, 56
    height = 280
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(1, len(entries))
    values = [_num(r.get("rto_seconds")) for r, _ in entries]
    vmax = max(values, default=0.0) or 1.0
    step = _nice_step(vmax, 5)
    ymax = step * math.ceil(vmax / step)
    slot = plot_w / n
    bar_w = min(48.0, slot * 0.7)
    parts = [
        f'<svg class="chart" role="img" aria-label="RTO trend of past drills" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">'
    ]
    t = 0.0
    while t <= ymax + 1e-9:
        y = top + plot_h - t / ymax * plot_h
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_h(_tick_label(t))}</text>')
        t += step
    label_every = max(1, math.ceil(n / max(1, int(plot_w // 64))))
    labelled = {i for i in range(n) if i % label_every == 0}
    for c in [i for i, (_, current) in enumerate(entries) if current]:
        # the current run is always labelled; drop regular labels that would collide with it
        labelled = {i for i in labelled if abs(i - c) >= label_every} | {c}
    for i, ((r, current), value) in enumerate(zip(entries, values, strict=True)):
        cx = left + slot * (i + 0.5)
        h = value / ymax * plot_h
        y = top + plot_h - h
        passed = r.get("passed") is True
        colour = GREEN if passed else RED
        when = _parse_time(r.get("started_at"))
        date = when.strftime("%Y-%m-%d %H:%M UTC") if when else _text(r.get("started_at"))
        tip = f"{_text(r.get('cluster'))} {date}: {'passed' if passed else 'FAILED'}, RTO {value:.1f}s"
        stroke = ' stroke="#111827" stroke-width="2"' if current else ""
        parts.append(
            f'<rect x="{cx - bar_w / 2:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{max(h, 1.5):.1f}" fill="{colour}"{stroke} '
            f'class="bar {"pass" if passed else "fail"}"><title>{_h(tip)}</title></rect>'
        )
        if bar_w >= 22:
            parts.append(f'<text x="{cx:.1f}" y="{y - 5:.1f}" class="val" text-anchor="middle">{value:.0f}s</text>')
        if i in labelled:
            d1 = when.strftime("%m-%d") if when else "?"
            d2 = when.strftime("%H:%M") if when else ""
            cls = "tick strong" if current else "tick"
            parts.append(f'<text x="{cx:.1f}" y="{top + plot_h + 16}" class="{cls}" text-anchor="middle">{_h(d1)}</text>')
            parts.append(f'<text x="{cx:.1f}" y="{top + plot_h + 30}" class="{cls}" text-anchor="middle">{_h(d2)}</text>')
        if current:
            parts.append(f'<text x="{cx:.1f}" y="{top + plot_h + 46}" class="tick strong" text-anchor="middle">this run</text>')
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" class="axis"/>')
    parts.append(f'<text x="{left}" y="14" class="tick">RTO (seconds)</text>')
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
:root{--fg:#111827;--muted:#6b7280;--line:#e5e7eb;--bg:#ffffff;--card:#f9fafb}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
  color:var(--fg);background:var(--bg)}
main{max-width:1000px;margin:0 auto;padding:0 20px 40px}
header.verdict{padding:18px 20px;color:#fff}
header.verdict .wrap{max-width:1000px;margin:0 auto;padding:0 20px}
header.pass{background:#15803d}
header.fail{background:#b91c1c}
header h1{margin:0;font-size:28px;letter-spacing:.02em}
header p{margin:4px 0 0;opacity:.92}
h2{font-size:18px;margin:28px 0 10px;border-bottom:1px solid var(--line);padding-bottom:4px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-top:18px}
.card{flex:1 1 200px;background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.06em}
.card .v{font-size:22px;font-weight:600}
.card .s{color:var(--muted);font-size:13px}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--card);font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.bad,.bad{color:#b91c1c;font-weight:600}
code,pre{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:13px}
pre{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:10px;white-space:pre-wrap;word-break:break-word}
.chart{max-width:100%;height:auto;display:block}
.chart text{font-family:inherit}
.chart .lbl{font-size:13px;fill:var(--fg)}
.chart .strong{font-weight:600}
.chart .val{font-size:12px;fill:#374151}
.chart .val.bad{fill:#b91c1c;font-weight:600}
.chart .inbar{font-size:12px;fill:#fff;font-weight:600}
.chart .tick{font-size:11px;fill:var(--muted)}
.chart .grid{stroke:var(--line);stroke-width:1}
.chart .axis{stroke:#9ca3af;stroke-width:1}
.legend{display:flex;gap:16px;font-size:13px;color:var(--muted);margin:4px 0 8px}
.sw{display:inline-block;width:12px;height:12px;border-radius:2px;vertical-align:-1px;margin-right:5px}
.muted{color:var(--muted)}
footer{color:var(--muted);font-size:12px;margin-top:32px}
"""


def render_html(result: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """A self-contained page: inline CSS and SVG, no script, no external resource (CSP enforces it)."""
    v = _view(result)
    cls = "pass" if v.passed else "fail"
    o = v.objects
    failed_phases = [p.name for p in v.phases if p.status == "failed"]
    parts: list[str] = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # No network and no script, whatever a string in the result might try.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">",
        f"<title>{_h(v.title)}: {v.verdict}</title>",
        f"<style>{_CSS}</style></head><body>",
        f'<header class="verdict {cls}"><div class="wrap"><h1 id="verdict">{_h(v.title)}: {v.verdict}</h1>',
        f"<p>{_h(v.kind)} of cluster <b>{_h(v.cluster)}</b> · started {_h(_when(v.started_at))} · "
        f"finished {_h(_when(v.finished_at))}"
        + (f" · failed in phase <b>{_h(', '.join(failed_phases))}</b>" if failed_phases else "")
        + "</p></div></header>",
        "<main>",
        '<section class="cards">',
        f'<div class="card"><div class="k">RTO</div><div class="v" id="rto">{_h(fmt_seconds(v.rto))}</div>'
        f'<div class="s">{v.rto:.2f} s; all {len(v.phases)} phases: {sum(p.seconds for p in v.phases):.1f} s</div></div>',
        f'<div class="card"><div class="k">RPO: revision age</div><div class="v" id="rpo">{_h(fmt_seconds(v.revision_age))}</div>'
        f'<div class="s">uncaptured manual changes: '
        f"{'not measured' if v.uncaptured is None else _h(v.uncaptured)}</div></div>",
        f'<div class="card"><div class="k">Objects verified</div><div class="v">{o["verified"]}/{o["objects"]}</div>'
        f'<div class="s">{o["missing"]} missing · {o["drifted"]} drifted · {o["unhealthy"]} not healthy</div></div>',
        f'<div class="card"><div class="k">Failures</div><div class="v{" bad" if v.failures else ""}">{len(v.failures)}</div>'
        f'<div class="s">{"see the table below" if v.failures else "none"}</div></div>',
        "</section>",
        '<section id="timeline"><h2>Phase timeline</h2>',
    ]
    if v.phases:
        parts.append(timeline_svg(v.phases))
        parts.append(
            '<table id="phases"><thead><tr><th>phase</th><th class="num">seconds</th><th class="num">share</th>'
            "<th>status</th><th>detail</th></tr></thead><tbody>"
        )
        total = sum(p.seconds for p in v.phases) or 1.0
        for i, p in enumerate(v.phases):
            parts.append(
                f'<tr><td><span class="sw" style="background:{_phase_colour(i, p.status)}"></span>{_h(p.name)}</td>'
                f'<td class="num">{p.seconds:.2f}</td><td class="num">{100 * p.seconds / total:.0f}%</td>'
                f'<td class="{"bad" if p.status == "failed" else ""}">{_h(p.status)}</td><td>{_h(p.detail)}</td></tr>'
            )
        parts.append("</tbody></table>")
    else:
        parts.append('<p class="muted">No phase ran.</p>')
    parts.append("</section>")
    parts.append('<section id="rpo-section"><h2>Recovery point</h2>')
    parts.append(f"<p>{_h(_rpo_text(v))}.</p>")
    if v.sources:
        parts.append(
            "<table><thead><tr><th>source</th><th>url</th><th>branch</th><th>path</th><th>revision</th><th>committed</th>"
            '<th class="num">objects</th></tr></thead><tbody>'
        )
        for s in v.sources:
            parts.append(
                f"<tr><td>{_h(s.get('name'))}</td><td><code>{_h(s.get('url'))}</code></td><td>{_h(s.get('branch'))}</td>"
                f'<td>{_h(s.get("path"))}</td><td><code title="{_h(s.get("revision"))}">{_h(_short(_text(s.get("revision"))))}'
                f'</code></td><td>{_h(_committed(s.get("committed_at")))}</td><td class="num">{_h(s.get("objects"))}</td></tr>'
            )
        parts.append("</tbody></table>")
    parts.append("</section>")
    parts.append(f'<section id="failures"><h2>Failures ({len(v.failures)})</h2>')
    if v.failures:
        parts.append("<table><thead><tr><th>object</th><th>source</th><th>message</th></tr></thead><tbody>")
        for f in v.failures:
            parts.append(
                f'<tr><td class="bad">{_h(f["object"])}</td><td><code>{_h(f["source"])}</code></td>'
                f"<td>{_h(f['message'])}</td></tr>"
            )
        parts.append("</tbody></table>")
    else:
        parts.append('<p class="muted">None.</p>')
    parts.append("</section>")
    if v.error:
        parts.append(f'<section id="error"><h2>Error</h2><pre>{_h(v.error)}</pre></section>')
    entries = _trend_entries(result, history)
    passed_n = sum(1 for r, _ in entries if r.get("passed") is True)
    parts.append('<section id="trend"><h2>Trend of past drills</h2>')
    parts.append(
        f'<div class="legend"><span><span class="sw" style="background:{GREEN}"></span>passed</span>'
        f'<span><span class="sw" style="background:{RED}"></span>failed</span>'
        f"<span>{len(entries)} runs, {passed_n} passed</span></div>"
    )
    parts.append(trend_svg(entries))
    if len(entries) <= 1:
        parts.append('<p class="muted">No earlier drill is recorded yet: the trend grows with every drill.</p>')
    parts.append("</section>")
    parts.append(f'<section id="next"><h2>Next</h2><pre>{_h(next_command(result))}</pre></section>')
    parts.append(f"<footer>rebuild report · schema {SCHEMA} · this page loads nothing from the network.</footer>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts)
