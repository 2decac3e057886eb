"""A finished run's paperwork: the four reports, the history line, the webhook.

Shared by ``rebuild drill`` and a runbook's ``report`` step, so both write the same files the
same way: the history is read for the trend before the run is appended (once per run), a
result that departs from the schema is still reported but kept out of the trend, and a webhook
that fails is a separate error (the reports are written either way).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rebuild.core.progress import Progress
from rebuild.core.results import RUN_SCHEMA, RunResult, as_dict, validate_run
from rebuild.drills import history, report
from rebuild.drills.notify import NotifyError, notify


@dataclass
class Published:
    reports: dict[str, Path]  # by key: json, markdown, junit, html
    notify_error: NotifyError | None = None

    def paths(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.reports.items()}


def write_run_reports(
    result: RunResult | dict[str, Any], out: Path, history_path: Path | None, progress: Progress
) -> dict[str, Path]:
    """The four reports of a run; the history (when given) is read for the trend, then appended (once per run)."""
    data = as_dict(result)
    past = history.load(history_path, warn=lambda m: progress(f"history: {m}")) if history_path else []
    problems = validate_run(data)
    if problems:  # still reported (reports are lenient), but kept out of the trend
        progress(f"the result does not follow {RUN_SCHEMA} ({'; '.join(problems[:3])}); not added to the history")
    elif history_path:
        history.append(history_path, data)
    return report.write_reports(data, out, history=past)


def publish(
    result: RunResult | dict[str, Any],
    out: Path,
    *,
    history_path: Path | None,
    notify_url: str | None,
    progress: Progress,
) -> Published:
    """Reports and history, then the webhook (when a URL is given); a webhook failure is returned, not raised."""
    done = Published(write_run_reports(result, out, history_path, progress))
    if notify_url:
        try:
            notify(notify_url, as_dict(result), report_path=done.reports["html"], progress=progress)
        except NotifyError as err:
            done.notify_error = err
    return done
