"""The SVG charts of the HTML page: the phase timeline (where the time went) and the RTO trend of past drills.

Inline SVG, no script: the page stays self-contained and its Content-Security-Policy forbids
anything else.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from typing import Any

from rebuild.core.results import RunPhase, parse_time
from rebuild.drills.report.common import XML_INVALID, fmt_seconds, text_of

# Phase colours identify the phase; status overrides them (failed red, skipped grey) so a
# failure is the first thing the eye finds on the timeline.
# Neighbours differ in hue and lightness; no red, green or grey (those mean failed, passed, skipped).
PALETTE = ("#2563eb", "#0891b2", "#7c3aed", "#d97706", "#0d9488", "#4f46e5", "#92400e", "#475569", "#0284c7", "#a21caf")
RED, GREEN, GREY = "#dc2626", "#16a34a", "#9ca3af"


def num_of(v: Any, default: float = 0.0) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or math.isinf(v):
        return default
    return float(v)


def esc(s: Any) -> str:
    # Control characters would render as boxes (and are parse errors): show U+FFFD instead.
    return html.escape(XML_INVALID.sub("\ufffd", text_of(s)), quote=True)


def when_text(v: str) -> str:
    t = parse_time(v)
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


def phase_colour(index: int, status: str) -> str:
    if status == "failed":
        return RED
    if status == "skipped":
        return GREY
    return PALETTE[index % len(PALETTE)]


def timeline_svg(phases: list[RunPhase], width: int = 960) -> str:
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
        parts.append(f'<text x="{x:.1f}" y="{axis_y + 14}" class="tick" text-anchor="middle">{esc(_tick_label(t))}</text>')
        t += step
    # overview: every phase as a segment of one bar
    y = top
    parts.append(f'<text x="{label_w - 8}" y="{y + row_h / 2 + 4:.1f}" class="lbl strong" text-anchor="end">total</text>')
    x = float(label_w)
    for i, p in enumerate(phases):
        w = p.seconds * scale
        colour = phase_colour(i, p.status)
        tip = f"{p.name}: {p.seconds:.2f}s ({p.status}){' - ' + p.detail if p.detail else ''}"
        parts.append(
            f'<rect x="{x:.1f}" y="{y + 3}" width="{max(w, 1.5):.1f}" height="{row_h - 6}" fill="{colour}" '
            f'class="seg"><title>{esc(tip)}</title></rect>'
        )
        if w > 7.5 * len(p.name) + 10:
            parts.append(
                f'<text x="{x + w / 2:.1f}" y="{y + row_h / 2 + 4:.1f}" class="inbar" text-anchor="middle">{esc(p.name)}</text>'
            )
        x += w
    parts.append(
        f'<text x="{label_w + plot_w + 8}" y="{y + row_h / 2 + 4:.1f}" class="lbl strong">{esc(fmt_seconds(total))}</text>'
    )
    # Gantt rows
    start = 0.0
    for i, p in enumerate(phases):
        y = top + row_h * (i + 1)
        colour = phase_colour(i, p.status)
        x = label_w + start * scale
        w = p.seconds * scale
        tip = f"{p.name}: {p.seconds:.2f}s ({p.status}){' - ' + p.detail if p.detail else ''}"
        parts.append(f'<text x="{label_w - 8}" y="{y + row_h / 2 + 4:.1f}" class="lbl" text-anchor="end">{esc(p.name)}</text>')
        if p.status == "skipped":
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 7}" width="{max(w, 3):.1f}" height="{row_h - 14}" fill="{GREY}" class="seg">'
                f"<title>{esc(tip)}</title></rect>"
            )
            value = "skipped"
        else:
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 5}" width="{max(w, 2):.1f}" height="{row_h - 10}" rx="2" fill="{colour}" '
                f'class="seg"><title>{esc(tip)}</title></rect>'
            )
            value = f"{p.seconds:.1f}s" + (" failed" if p.status == "failed" else "")
        parts.append(
            f'<text x="{x + max(w, 3) + 6:.1f}" y="{y + row_h / 2 + 4:.1f}" class="val{" bad" if p.status == "failed" else ""}">'
            f"{esc(value)}</text>"
        )
        start += p.seconds
    parts.append("</svg>")
    return "".join(parts)


def trend_entries(result: dict[str, Any], history: list[dict[str, Any]]) -> list[tuple[dict[str, Any], bool]]:
    def key(r: dict[str, Any]) -> tuple[str, str]:
        return (text_of(r.get("cluster")), text_of(r.get("started_at")))

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
    values = [num_of(r.get("rto_seconds")) for r, _ in entries]
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
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{esc(_tick_label(t))}</text>')
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
        when = parse_time(r.get("started_at"))
        date = when.strftime("%Y-%m-%d %H:%M UTC") if when else text_of(r.get("started_at"))
        tip = f"{text_of(r.get('cluster'))} {date}: {'passed' if passed else 'FAILED'}, RTO {value:.1f}s"
        stroke = ' stroke="#111827" stroke-width="2"' if current else ""
        parts.append(
            f'<rect x="{cx - bar_w / 2:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{max(h, 1.5):.1f}" fill="{colour}"{stroke} '
            f'class="bar {"pass" if passed else "fail"}"><title>{esc(tip)}</title></rect>'
        )
        if bar_w >= 22:
            parts.append(f'<text x="{cx:.1f}" y="{y - 5:.1f}" class="val" text-anchor="middle">{value:.0f}s</text>')
        if i in labelled:
            d1 = when.strftime("%m-%d") if when else "?"
            d2 = when.strftime("%H:%M") if when else ""
            cls = "tick strong" if current else "tick"
            parts.append(f'<text x="{cx:.1f}" y="{top + plot_h + 16}" class="{cls}" text-anchor="middle">{esc(d1)}</text>')
            parts.append(f'<text x="{cx:.1f}" y="{top + plot_h + 30}" class="{cls}" text-anchor="middle">{esc(d2)}</text>')
        if current:
            parts.append(f'<text x="{cx:.1f}" y="{top + plot_h + 46}" class="tick strong" text-anchor="middle">this run</text>')
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" class="axis"/>')
    parts.append(f'<text x="{left}" y="14" class="tick">RTO (seconds)</text>')
    parts.append("</svg>")
    return "".join(parts)
