"""The HTML report: what a person opens after a drill to see where the time went, what would be lost, the trend.

A self-contained page: inline CSS and SVG (charts.py), no script, no external resource.
"""

from __future__ import annotations

from typing import Any

from rebuild.core.results import RUN_SCHEMA, RunResult, as_dict
from rebuild.drills.report.charts import GREEN, RED, esc, phase_colour, timeline_svg, trend_entries, trend_svg, when_text
from rebuild.drills.report.common import Result, committed_text, fmt_seconds, next_command, rpo_text, short_rev, text_of

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


def render_html(result: Result, history: list[dict[str, Any]]) -> str:
    """A self-contained page: inline CSS and SVG, no script, no external resource (CSP enforces it)."""
    v = RunResult.read(result)
    cls = "pass" if v.passed else "fail"
    o = v.objects
    failed_phases = [p.name for p in v.phases if p.status == "failed"]
    parts: list[str] = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # No network and no script, whatever a string in the result might try.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">",
        f"<title>{esc(v.title)}: {v.verdict}</title>",
        f"<style>{_CSS}</style></head><body>",
        f'<header class="verdict {cls}"><div class="wrap"><h1 id="verdict">{esc(v.title)}: {v.verdict}</h1>',
        f"<p>{esc(v.kind)} of cluster <b>{esc(v.cluster)}</b> · started {esc(when_text(v.started_at))} · "
        f"finished {esc(when_text(v.finished_at))}"
        + (f" · failed in phase <b>{esc(', '.join(failed_phases))}</b>" if failed_phases else "")
        + "</p></div></header>",
        "<main>",
        '<section class="cards">',
        f'<div class="card"><div class="k">RTO</div><div class="v" id="rto">{esc(fmt_seconds(v.rto_seconds))}</div>'
        f'<div class="s">{v.rto_seconds:.2f} s; all {len(v.phases)} phases: {sum(p.seconds for p in v.phases):.1f} s</div></div>',
        f'<div class="card"><div class="k">RPO: revision age</div>'
        f'<div class="v" id="rpo">{esc(fmt_seconds(v.revision_age_seconds))}</div>'
        f'<div class="s">uncaptured manual changes: '
        f"{'not measured' if v.uncaptured_changes is None else esc(v.uncaptured_changes)}</div></div>",
        f'<div class="card"><div class="k">Objects verified</div><div class="v">{o.verified}/{o.objects}</div>'
        f'<div class="s">{o.missing} missing · {o.drifted} drifted · {o.unhealthy} not healthy</div></div>',
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
                f'<tr><td><span class="sw" style="background:{phase_colour(i, p.status)}"></span>{esc(p.name)}</td>'
                f'<td class="num">{p.seconds:.2f}</td><td class="num">{100 * p.seconds / total:.0f}%</td>'
                f'<td class="{"bad" if p.status == "failed" else ""}">{esc(p.status)}</td><td>{esc(p.detail)}</td></tr>'
            )
        parts.append("</tbody></table>")
    else:
        parts.append('<p class="muted">No phase ran.</p>')
    parts.append("</section>")
    parts.append('<section id="rpo-section"><h2>Recovery point</h2>')
    parts.append(f"<p>{esc(rpo_text(v))}.</p>")
    if v.sources:
        parts.append(
            "<table><thead><tr><th>source</th><th>url</th><th>branch</th><th>path</th><th>revision</th><th>committed</th>"
            '<th class="num">objects</th></tr></thead><tbody>'
        )
        for s in v.sources:
            rev = text_of(s.get("revision"))
            parts.append(
                f"<tr><td>{esc(s.get('name'))}</td><td><code>{esc(s.get('url'))}</code></td><td>{esc(s.get('branch'))}</td>"
                f'<td>{esc(s.get("path"))}</td><td><code title="{esc(rev)}">{esc(short_rev(rev))}'
                f"</code></td><td>{esc(committed_text(s.get('committed_at')))}</td>"
                f'<td class="num">{esc(s.get("objects"))}</td></tr>'
            )
        parts.append("</tbody></table>")
    parts.append("</section>")
    parts.append(f'<section id="failures"><h2>Failures ({len(v.failures)})</h2>')
    if v.failures:
        parts.append("<table><thead><tr><th>object</th><th>source</th><th>message</th></tr></thead><tbody>")
        for f in v.failures:
            parts.append(
                f'<tr><td class="bad">{esc(f.object)}</td><td><code>{esc(f.source)}</code></td><td>{esc(f.message)}</td></tr>'
            )
        parts.append("</tbody></table>")
    else:
        parts.append('<p class="muted">None.</p>')
    parts.append("</section>")
    if v.error:
        parts.append(f'<section id="error"><h2>Error</h2><pre>{esc(v.error)}</pre></section>')
    entries = trend_entries(as_dict(result), history)
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
    parts.append(f'<section id="next"><h2>Next</h2><pre>{esc(next_command(result))}</pre></section>')
    parts.append(f"<footer>rebuild report · schema {RUN_SCHEMA} · this page loads nothing from the network.</footer>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts)
