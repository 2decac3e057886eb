"""Turn one run result (schema ``rebuild.run/v1``) into the four reports people and CI read.

Why four: the JSON is the stable contract for tools; the Markdown goes into a ticket or a PR;
the JUnit XML makes CI systems show a failed phase or object as a red test without a
plugin; the HTML page is what a person opens after a drill to see at a glance where the
time went, what would be lost (RPO) and whether recovery is getting slower.

Everything here is pure rendering from the result (a :class:`RunResult` or its dict) plus
atomic file writes: no environment is read and nothing from the process is rendered, so a
report can only show what the result holds (which by contract holds no secret values). Every
string is escaped for its format (HTML, XML, Markdown) because object names, messages and
URLs come from git and from clusters, i.e. from people.

The renderers are lenient (``RunResult.read``): a drill that failed before any phase ran
still gets readable reports, so missing keys fall back to empty values instead of raising.
``validate_result`` is the strict check of the schema (docs/reports.md) for producers and tests.

One module per format: markdown.py, junit.py, page.py (HTML) with charts.py (its SVG);
common.py holds what they share.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rebuild.adapters.fs import atomic_write
from rebuild.core.results import PHASE_STATUSES, RunResult, as_dict
from rebuild.core.results import RUN_SCHEMA as SCHEMA
from rebuild.core.results import validate_run as validate_result
from rebuild.drills.report.charts import GREEN, GREY, PALETTE, RED, timeline_svg, trend_svg
from rebuild.drills.report.common import fmt_seconds, next_command
from rebuild.drills.report.junit import render_junit
from rebuild.drills.report.markdown import render_markdown
from rebuild.drills.report.page import render_html

__all__ = [
    "GREEN",
    "GREY",
    "PALETTE",
    "PHASE_STATUSES",
    "RED",
    "REPORT_FILES",
    "SCHEMA",
    "fmt_seconds",
    "next_command",
    "render_html",
    "render_junit",
    "render_markdown",
    "timeline_svg",
    "trend_svg",
    "validate_result",
    "write_reports",
]

REPORT_FILES = {"json": "result.json", "markdown": "report.md", "junit": "junit.xml", "html": "report.html"}


def write_reports(result: RunResult | dict[str, Any], out_dir: Path, *, history: list[dict[str, Any]]) -> dict[str, Path]:
    """Write result.json, report.md, junit.xml and report.html into ``out_dir``.

    ``history`` is the list of earlier results (oldest first, as ``rebuild.drills.history.load``
    returns it); the current result is added to the trend unless it is already in it.
    Returns the path of each report by key: json, markdown, junit, html.
    """
    data = as_dict(result)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {key: out_dir / name for key, name in REPORT_FILES.items()}
    atomic_write(paths["json"], json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    atomic_write(paths["markdown"], render_markdown(data))
    atomic_write(paths["junit"], render_junit(data))
    atomic_write(paths["html"], render_html(data, history))
    return paths
